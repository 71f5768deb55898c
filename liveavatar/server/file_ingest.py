"""A session fed from a media file (the demo clip, --source) instead of a camera."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from liveavatar.runtime import Worker
from liveavatar.types import VOICE_RATE, AudioChunk, CapturedFrame

if TYPE_CHECKING:
    from liveavatar.server.session import Session

log = logging.getLogger("liveavatar.server")


class FileDriver(Worker):
    """Feeds a session from a media file (real-time paced, looping): the demo / --source."""

    def __init__(self, session: Session, path: Path, iter_media: Callable[..., Any]) -> None:
        super().__init__(f"file-{session.sid}")
        self.session, self.path, self._iter_media = session, path, iter_media
        self.error: str | None = None

    def run(self) -> None:
        s = self.session
        resampler = None
        try:
            for item in self._iter_media(self.path, realtime=True, loop=True):
                if self.halted:
                    break
                if isinstance(item, CapturedFrame):
                    s.receive_video(item, item.t_capture_ns)
                elif isinstance(item, AudioChunk):
                    s.receive_audio(item)
                    resampler = resampler or av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
                    s.push_voice_threadsafe(chunk_to_voice_frames(item, resampler))
                else:   # the end of one pass's audio (the file loops)
                    s.end_audio()
        except Exception as e:  # a broken demo file must not take the service down
            self.error = f"{self.path}: {e}"
            log.error("session %s: file source stopped: %s", s.sid, self.error)


def chunk_to_voice_frames(chunk: AudioChunk, resampler: av.AudioResampler) -> list[av.AudioFrame]:
    samples = chunk.samples if chunk.samples.ndim == 1 else chunk.samples.mean(axis=1)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = chunk.sample_rate
    return resampler.resample(frame)
