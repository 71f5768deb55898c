"""Make the bundled demo clip liveavatar/assets/demo.mp4 (run once; the result is committed).

Picture: skimage's `astronaut` (Eileen Collins, NASA photo, public domain) animated with camera-
like sway, nods and head shakes. Sound: espeak-ng (GPL program; its output speech is not
covered by the GPL). Needs the test extras (scikit-image) and espeak-ng."""
from __future__ import annotations

import tempfile
from pathlib import Path

import skimage.data

from tests.media import animate, read_wav, speak, write_clip

OUT = Path(__file__).resolve().parents[1] / "liveavatar" / "assets" / "demo.mp4"
TEXT = ("Hi, I am your live avatar demo. I follow your head, your face and your voice. "
        "Say dance, and I will dance.")

with tempfile.TemporaryDirectory() as d:
    wav = speak(TEXT, Path(d) / "demo.wav", pad_s=0.5)
    a, rate = read_wav(wav)
    seconds = len(a) / rate
    img = skimage.data.astronaut()
    third = seconds / 3
    frames = (animate(img, third, motion="sway") + animate(img, third, motion="nod")
              + animate(img, seconds - 2 * round(third * 30) / 30, motion="shake"))
    write_clip(OUT, frames, audio=wav)
print(OUT, OUT.stat().st_size, "bytes", f"{seconds:.1f} s")
