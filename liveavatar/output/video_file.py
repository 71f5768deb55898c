"""Write avatar frames (+ the input's audio) to MP4/H.264 or WebM/VP9 with alpha.

The file is written under a temporary name beside the target and renamed into place only when
complete, so a failed or interrupted render never leaves a half-written output behind."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.errors import UserError

FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


def parse_color(text: str) -> tuple[int, int, int]:
    named = {"green": (0, 177, 64), "blue": (0, 71, 187), "black": (0, 0, 0), "white": (255, 255, 255),
             "gray": (128, 128, 128), "grey": (128, 128, 128), "magenta": (255, 0, 255)}
    if text.lower() in named:
        return named[text.lower()]
    h = text.lstrip("#")
    if len(h) == 6:
        try:
            return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            pass
    raise UserError(f"--background {text!r}: use a name ({', '.join(named)}) or #rrggbb")


class VideoFileWriter:
    """`.webm` keeps the alpha channel (VP9 yuva420p); `.mp4`/`.mov`/`.mkv` get H.264 with the
    avatar composited over `background`. Audio (float32 chunks) is re-encoded: AAC in MP4, Opus
    in WebM/MKV."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio_rate: int = 0, audio_channels: int = 0,
                 background: tuple[int, int, int] = (0, 177, 64), crf: int = 23) -> None:
        import av
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FORMATS:
            raise UserError(f"{self.path}: unsupported output type {suffix or '(none)'}; "
                            f"use one of {', '.join(FORMATS)}")
        if not self.path.parent.exists():
            raise UserError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder")
        self.alpha = suffix == ".webm"
        self.tmp = self.path.with_name(f".{self.path.name}.part{os.getpid()}{suffix}")
        try:
            self.container = av.open(str(self.tmp), "w", format=FORMATS[suffix])
        except (av.error.FFmpegError, OSError) as e:
            raise UserError(f"{self.path}: cannot write here ({getattr(e, 'strerror', None) or e})") from None
        rate = Fraction(fps).limit_denominator(1001)
        if self.alpha:
            self.vs = self.container.add_stream("libvpx-vp9", rate=rate)
            self.vs.pix_fmt = "yuva420p"
            # realtime deadline + high cpu-used: the VP9 encoder is otherwise the slowest stage.
            self.vs.options = {"crf": str(crf + 8), "b": "0", "deadline": "realtime", "cpu-used": "8",
                               "row-mt": "1"}
        else:
            self.vs = self.container.add_stream("libx264", rate=rate)
            self.vs.pix_fmt = "yuv420p"
            self.vs.options = {"preset": "veryfast", "crf": str(crf)}
        self.vs.width, self.vs.height = width, height
        self.bg = np.array(background, np.float32)
        self.n = 0
        self.audio_in_rate = audio_rate
        self.as_: Any = None           # av audio stream (PyAV types streams by a union)
        self._resampler: Any = None
        if audio_rate > 0:
            layout = "stereo" if audio_channels >= 2 else "mono"
            codec, out_rate = ("aac", audio_rate) if suffix in (".mp4", ".mov") else ("libopus", 48000)
            self.as_ = self.container.add_stream(codec, rate=out_rate)
            self.as_.layout = layout
            self._channels = 2 if layout == "stereo" else 1
            self._resampler = av.AudioResampler(format=self.as_.format.name, layout=layout, rate=out_rate)
            self._apts = 0
        self._closed = False

    def write_video(self, rgba: np.ndarray) -> None:
        import av
        if self.alpha:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba")
        else:
            a = rgba[..., 3:4].astype(np.float32) * (1.0 / 255.0)
            rgb = (rgba[..., :3] * a + self.bg * (1.0 - a)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.n
        self.n += 1
        for p in self.vs.encode(frame):
            self.container.mux(p)

    def write_audio(self, samples: np.ndarray, rate: int) -> None:
        """float32 samples, (n,) or (n, ch)."""
        import av
        if self.as_ is None or samples.size == 0:
            return
        a = samples if samples.ndim == 2 else samples[:, None]
        a = np.ascontiguousarray(a, dtype=np.float32)
        layout = "mono" if a.shape[1] == 1 else "stereo"
        if a.shape[1] > 2:
            a = np.ascontiguousarray(a[:, :2])
        frame = av.AudioFrame.from_ndarray(a.reshape(1, -1), format="flt", layout=layout)
        frame.sample_rate = rate
        frame.pts = self._apts
        frame.time_base = Fraction(1, rate)
        self._apts += a.shape[0]
        for rf in self._resampler.resample(frame):
            for p in self.as_.encode(rf):
                self.container.mux(p)

    def finish(self) -> Path:
        """Flush, close and move the file into place."""
        for p in self.vs.encode():
            self.container.mux(p)
        if self.as_ is not None:
            for rf in self._resampler.resample(None):
                for p in self.as_.encode(rf):
                    self.container.mux(p)
            for p in self.as_.encode():
                self.container.mux(p)
        self.container.close()
        self._closed = True
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (on errors and Ctrl-C)."""
        if not self._closed:
            try:
                self.container.close()
            except Exception:  # the container may be half-initialised; the file goes anyway
                pass
            self._closed = True
        self.tmp.unlink(missing_ok=True)
