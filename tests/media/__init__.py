"""Real media of people and real speech for tests, gathered offline into tests/media/.cache.

Sources (see ../shared/notes/mediapipe-and-media.md): skimage's astronaut (public domain),
matplotlib's grace_hopper (public domain), Debian opencv-doc's messi5 / basketball / Megamind /
vtest, espeak-ng speech, alsa-utils voice recordings. Nothing is committed; `python -m
tests.media.fetch` (run by scripts/setup.sh --test) gathers everything.
"""
from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
OPENCV_DATA = CACHE / "opencv-doc" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data"
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


def path(name: str) -> Path:
    """Path of a gathered file; fails loudly (never skips) when it is missing."""
    p = CACHE / name
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: run `python -m tests.media.fetch`")
    return p


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "media"


def shared(rel: str) -> Path:
    """Path of real media in ../shared/media (faces/d3.mp4, bodies/basketball.mp4, ...); fails
    loudly (never skips) when it is missing."""
    p = SHARED / rel
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: the project expects ../shared/media beside it")
    return p


def load_rgb(name: str) -> np.ndarray:
    import cv2
    img = cv2.imread(str(path(name)), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_wav(p: Path) -> tuple[np.ndarray, int]:
    """float32 samples (n,) or (n, ch) and the rate."""
    import wave
    with wave.open(str(p), "rb") as w:
        rate, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        raw = w.readframes(n)
    dtype: Any = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    a = np.frombuffer(raw, dtype).astype(np.float32)
    a = (a - 128) / 128 if width == 1 else a / float(np.iinfo(dtype).max)
    return (a.reshape(-1, ch) if ch > 1 else a), rate


def write_wav(p: Path, samples: np.ndarray, rate: int) -> None:
    import wave
    a = np.clip(samples, -1, 1)
    ch = 1 if a.ndim == 1 else a.shape[1]
    with wave.open(str(p), "wb") as w:
        w.setnchannels(ch)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((a * 32767).astype(np.int16).tobytes())


def speak(text: str, out: Path, pad_s: float = 0.0, rate: int = 22050) -> Path:
    """espeak-ng speech (US English), optionally with `pad_s` of silence before and after."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True)
    a, r = read_wav(raw)
    raw.unlink()
    pad = np.zeros(int(pad_s * r), np.float32)
    write_wav(out, np.concatenate([pad, a, pad]), r)
    return out


def animate(image: np.ndarray, seconds: float, fps: int = 30, size: tuple[int, int] = (640, 480),
            motion: str = "sway") -> list[np.ndarray]:
    """Camera-like frames from a still: a slow zoom/pan/rotate ('sway'), or 'nod'/'shake' head
    motion made by piecewise warps. Returns RGB uint8 frames of `size` (w, h)."""
    import cv2
    w, h = size
    ih, iw = image.shape[:2]
    scale = max(w / iw, h / ih) * 1.15
    frames = []
    n = int(round(seconds * fps))
    for i in range(n):
        t = i / fps
        ang = 4.0 * np.sin(2 * np.pi * 0.4 * t) if motion == "sway" else 0.0
        dx = 0.04 * w * np.sin(2 * np.pi * 0.25 * t)
        dy = 0.03 * h * np.sin(2 * np.pi * (0.6 if motion == "nod" else 0.3) * t)
        if motion == "shake":
            dx = 0.08 * w * np.sin(2 * np.pi * 1.2 * t)
        m = cv2.getRotationMatrix2D((iw / 2, ih / 2), ang, scale * (1 + 0.05 * np.sin(2 * np.pi * 0.2 * t)))
        m[0, 2] += w / 2 - iw / 2 + dx
        m[1, 2] += h / 2 - ih / 2 + dy
        frames.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return frames


def write_clip(out: Path, frames: list[np.ndarray], fps: int = 30, audio: Path | None = None) -> Path:
    """MP4 (H.264 + AAC) from RGB frames and an optional WAV."""
    import av
    with av.open(str(out), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        as_ = None
        if audio is not None:
            samples, rate = read_wav(audio)
            if samples.ndim > 1:
                samples = samples.mean(axis=1)
            as_ = c.add_stream("aac", rate=rate)
            as_.layout = "mono"
        for f in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if as_ is not None:
            step = 1024
            for i in range(0, len(samples), step):
                chunk = samples[i:i + step].astype(np.float32)[None, :]
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = i
                af.time_base = Fraction(1, rate)
                for p in as_.encode(af):
                    c.mux(p)
            for p in as_.encode():
                c.mux(p)
    return out
