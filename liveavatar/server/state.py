"""What the aiohttp application holds, under typed keys: the engine, the config, and one record
of the service's own resources (peer connections, background tasks, startup results)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaRelay
from prometheus_client import CollectorRegistry

from liveavatar.server.config import ServerConfig
from liveavatar.server.engine import Engine


@dataclass
class PeerResource:
    """One WHIP or WHEP resource (RFC 9725): DELETE /{kind}/{sid}/{rid} closes it."""
    kind: str                                # "whip" or "whep"
    sid: str
    pc: RTCPeerConnection
    close: Callable[[], Awaitable[None]]     # undoes what the offer attached, closes pc (idempotent)


@dataclass
class ServiceState:
    registry: CollectorRegistry
    startup_feeds: list[tuple[str, str]]     # (kind, url) outputs `serve` asked for
    peers: dict[str, PeerResource] = field(default_factory=dict)   # resource id -> resource
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # session -> last 1 Hz stats
    tasks: list[asyncio.Future[None]] = field(default_factory=list)
    startup_errors: list[str] = field(default_factory=list)        # outputs that did not start
    # Set once the default session and the asked-for outputs are up (or failed): /health waits on it.
    outputs_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Fans each session's one source track out to its viewers.
    relay: MediaRelay = field(default_factory=MediaRelay)


ENGINE = web.AppKey("engine", Engine)
CONFIG = web.AppKey("config", ServerConfig)
SERVICE = web.AppKey("service", ServiceState)
