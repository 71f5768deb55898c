"""Decode a media file into CapturedFrame / AudioChunk items, in presentation order.

Offline (render, perceive) the items carry a synthetic timeline starting at `start_ns`; live
(`serve --source`, the demo fallback) `realtime=True` paces them against the monotonic clock and
`loop=True` starts over at the end, so a file behaves like a camera + microphone.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.errors import UserError
from liveavatar.types import AudioChunk, CapturedFrame

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
#: Audio after the last video frame that audio_end_before_last_frame holds back at most (chunks).
MAX_TRAILING_AUDIO = 500


@dataclass(frozen=True, slots=True)
class AudioEnd:
    """Marker item: the file's audio has ended. Speech still pending (the last word of the clip,
    with no silence after it) can be decoded now."""
    t_ns: int


@dataclass(slots=True)
class MediaInfo:
    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    frames: int              # decoded-frame estimate from the container (0 when unknown)
    has_audio: bool
    sample_rate: int
    channels: int


def _open(path: Path) -> Any:
    import av
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a media file")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not a readable media file ({e.strerror or type(e).__name__})") from None


def probe(path: str | Path) -> MediaInfo:
    """What the file holds. UserError for missing files, non-media and files without video."""
    path = Path(path)
    with _open(path) as c:
        if not c.streams.video:
            raise UserError(f"{path}: has no video stream")
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 30)
        dur = 0.0
        if vs.duration and vs.time_base:
            dur = float(vs.duration * vs.time_base)
        elif c.duration:
            dur = c.duration / 1e6
        a = c.streams.audio[0] if c.streams.audio else None
        info = MediaInfo(path, vs.codec_context.width, vs.codec_context.height, fps, dur,
                         int(vs.frames or 0), a is not None,
                         a.codec_context.sample_rate if a else 0,
                         a.codec_context.channels if a else 0)
    if info.width <= 0 or info.height <= 0:
        raise UserError(f"{path}: video stream has no picture size")
    return info


def count_video_frames(path: Path) -> int:
    """Exact frame count by demuxing (cheap: no decoding)."""
    with _open(path) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size > 0)


def iter_media(path: str | Path, realtime: bool = False, loop: bool = False,
               start_ns: int | None = None, audio: bool = True,
               mark_audio_end: bool = False) -> Iterator[CapturedFrame | AudioChunk | AudioEnd]:
    """Frames (HxWx3 RGB uint8) and audio chunks (float32 (n, ch)) in presentation order;
    with `mark_audio_end`, an AudioEnd item after each pass's last audio chunk.

    Raises UserError when the file has no decodable video frame at all."""
    import av
    path = Path(path)
    base = time.monotonic_ns() if start_ns is None else start_ns
    seq_v = seq_a = 0
    while True:
        got_video = False
        last_t = 0
        with _open(path) as c:
            if not c.streams.video:
                raise UserError(f"{path}: has no video stream")
            streams = [c.streams.video[0]] + ([c.streams.audio[0]] if audio and c.streams.audio else [])
            vs = streams[0]
            vs.thread_type = "AUTO"
            t0 = None
            resampler = None
            try:
                for frame in c.decode(*streams):
                    t = frame.time if frame.time is not None else 0.0
                    if t0 is None:
                        t0 = t
                    t_ns = base + int((t - t0) * 1e9)
                    if realtime:
                        delay = (t_ns - time.monotonic_ns()) / 1e9
                        if delay > 0:
                            time.sleep(delay)
                    if isinstance(frame, av.VideoFrame):
                        got_video = True
                        last_t = max(last_t, t_ns)
                        yield CapturedFrame(frame.to_ndarray(format="rgb24"), seq_v, t_ns)
                        seq_v += 1
                    else:
                        if resampler is None:  # packed float keeps the source rate and channels
                            resampler = av.AudioResampler(format="flt", layout=frame.layout.name,
                                                          rate=frame.sample_rate)
                        for rf in resampler.resample(frame):
                            ch = len(rf.layout.channels)
                            a = rf.to_ndarray().reshape(-1, ch)
                            yield AudioChunk(a[:, 0].copy() if ch == 1 else a, rf.sample_rate, seq_a, t_ns)
                            seq_a += 1
            except av.error.FFmpegError as e:
                if not got_video:
                    raise UserError(f"{path}: cannot decode ({e.strerror or type(e).__name__})") from None
                # A truncated tail: keep what decoded, like a player would.
        if not got_video:
            raise UserError(f"{path}: contains no video frames")
        if mark_audio_end and resampler is not None:
            yield AudioEnd(last_t)
        if not loop:
            return
        base = last_t + int(1e9 / 30)


def audio_end_before_last_frame(
        items: Iterable[CapturedFrame | AudioChunk | AudioEnd]) -> Iterator[CapturedFrame | AudioChunk | AudioEnd]:
    """The same items, except that the last video frame comes after the AudioEnd marker (and the
    audio before it), so a consumer that decodes pending speech at AudioEnd has the result in time
    for that frame. Offline only: it holds back one frame."""
    held: CapturedFrame | None = None
    trailing: list[CapturedFrame | AudioChunk | AudioEnd] = []
    for item in items:
        if isinstance(item, CapturedFrame):
            if held is not None:
                yield held
                yield from trailing
                trailing.clear()
            held = item
        elif held is None:
            yield item
        elif isinstance(item, AudioEnd):
            yield from trailing
            trailing.clear()
            yield item
            yield held
            held = None
        else:
            trailing.append(item)
            if len(trailing) > MAX_TRAILING_AUDIO:   # a long audio tail: stop holding the frame
                yield held
                yield from trailing
                trailing.clear()
                held = None
    if held is not None:
        yield held
    yield from trailing


def load_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 RGB uint8 (for stills in `perceive`)."""
    import cv2
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
