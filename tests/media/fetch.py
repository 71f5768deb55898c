"""Gather the real test media into tests/media/.cache (idempotent, offline but for Debian's
archive). Run: python -m tests.media.fetch"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.media import ALSA_SOUNDS, CACHE, OPENCV_DATA, animate, load_rgb, read_wav, speak, write_clip


def _opencv_doc() -> None:
    if (OPENCV_DATA / "messi5.jpg").exists():
        return
    with tempfile.TemporaryDirectory() as d:
        cmd = ["apt-get", "download", "opencv-doc"]
        r = subprocess.run(cmd, cwd=d, capture_output=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(cmd, cwd=d, check=True)
        deb = next(Path(d).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "opencv-doc")], check=True)


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    import cv2
    import skimage.data
    from matplotlib import cbook

    if not (CACHE / "astronaut.png").exists():
        cv2.imwrite(str(CACHE / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    if not (CACHE / "grace_hopper.jpg").exists():
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            (CACHE / "grace_hopper.jpg").write_bytes(f.read())
    _opencv_doc()
    for name in ("messi5.jpg", "basketball1.png", "basketball2.png", "Megamind.avi", "vtest.avi"):
        if not (CACHE / name).exists():
            shutil.copy(OPENCV_DATA / name, CACHE / name)
    for name in ("Front_Center.wav", "Front_Left.wav", "Noise.wav"):
        if (ALSA_SOUNDS / name).exists() and not (CACHE / name).exists():
            shutil.copy(ALSA_SOUNDS / name, CACHE / name)

    speech = {
        "speech_dance.wav": ("hello everyone, let's dance now", 1.0),
        "speech_hello.wav": ("hello everyone, thank you for watching the stream today", 1.0),
        "speech_jump.wav": ("okay everybody, time to jump", 1.0),
    }
    for name, (text, pad) in speech.items():
        if not (CACHE / name).exists():
            speak(text, CACHE / name, pad_s=pad)

    clips = {  # camera-like clips: a real photo animated, real speech as audio
        "astronaut_talk.mp4": ("astronaut.png", "speech_hello.wav", "sway", 4.0),
        "messi_sway.mp4": ("messi5.jpg", "speech_dance.wav", "sway", 3.0),
        "grace_nod.mp4": ("grace_hopper.jpg", None, "nod", 2.0),
    }
    for name, (img, wav, motion, secs) in clips.items():
        if not (CACHE / name).exists():
            if wav:  # the picture lasts as long as the speech, like a real recording
                secs = max(secs, len(read_wav(CACHE / wav)[0]) / read_wav(CACHE / wav)[1])
            frames = animate(load_rgb(img), secs, motion=motion)
            write_clip(CACHE / name, frames, audio=CACHE / wav if wav else None)
    print(f"test media ready in {CACHE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
