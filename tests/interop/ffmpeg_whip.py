"""Publish a real clip with FFmpeg's own WHIP muxer (FFmpeg 8 inside the PyAV wheel), as a user
of `ffmpeg -f whip` would: H.264 constrained baseline + Opus, paced in real time, looped.

Run as its own process (`python -m tests.interop.ffmpeg_whip URL CLIP SECONDS [CERT KEY]`): the
muxer's handshake runs inside write_header, which holds the GIL, so a service on a thread of the
same process could not answer its offer.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import av
import numpy as np


def publish(url: str, clip: Path, seconds: float, cert: str | None = None, key: str | None = None) -> int:
    options = {}
    if cert and key:
        # See liveavatar/server/signalling.py (FFMPEG_WHIP_HINT): the muxer's own certificate is
        # ECDSA P-224, which the service's OpenSSL no longer accepts in DTLS.
        options.update(cert_file=cert, key_file=key)
    out = av.open(url, "w", format="whip", options=options)
    video = out.add_stream("libx264", rate=30, options={"profile": "baseline", "tune": "zerolatency",
                                                        "preset": "ultrafast", "g": "30", "bf": "0"})
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    audio = out.add_stream("libopus", rate=48000, layout="stereo")
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
    start = time.monotonic()
    n_video = n_audio = 0
    while time.monotonic() - start < seconds:
        with av.open(str(clip)) as src:
            for frame in src.decode(*src.streams):
                if time.monotonic() - start >= seconds:
                    break
                if isinstance(frame, av.VideoFrame):
                    due = start + n_video / 30
                    time.sleep(max(0.0, due - time.monotonic()))
                    img = frame.to_ndarray(format="rgb24")
                    out_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    out_frame = out_frame.reformat(320, 240, "yuv420p")
                    out_frame.pts = n_video
                    n_video += 1
                    for packet in video.encode(out_frame):
                        out.mux(packet)
                else:
                    for rf in resampler.resample(frame):
                        rf.pts = n_audio
                        n_audio += rf.samples
                        for packet in audio.encode(rf):
                            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    out.close()  # the muxer DELETEs its WHIP resource
    return n_video


if __name__ == "__main__":
    args = sys.argv[1:]
    sent = publish(args[0], Path(args[1]), float(args[2]), *(args[3:5] if len(args) >= 5 else ()))
    print(f"sent {sent} video frames", flush=True)
