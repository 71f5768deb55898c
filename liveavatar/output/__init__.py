"""Sinks that take rendered avatar frames out of the service: the low-latency MPEG-TS feed for
OBS's media source, and the virtual camera. Each implements `FrameSink` (see base.py)."""
from liveavatar.output.base import FrameSink

__all__ = ["FrameSink"]
