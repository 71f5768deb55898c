"""MPEG-TS feed for OBS: what one frame costs the sink thread (compositing over the key colour,
H.264 encode, mux + UDP send) and how long a frame takes from `send()` until an FFmpeg reader on
the same machine has decoded it (the feed's share of glass-to-glass latency, before OBS).

Frames are a real photo cut-out with the frame number drawn into a corner as 16 black/white
blocks, so the reader can tell which frame it decoded."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np

from liveavatar.bench import report

BITS = 16
BLOCK = 8


def _avatar(size: int) -> np.ndarray:
    import cv2
    from skimage import data  # bundled public-domain photo, no download
    rgb = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot((xx - size / 2) / (0.35 * size), (yy - size / 2) / (0.45 * size))
    alpha = (np.clip((1.1 - r) / 0.1, 0, 1) * 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def _stamp(rgba: np.ndarray, seq: int) -> None:
    for bit in range(BITS):
        value = 255 if (seq >> bit) & 1 else 0
        rgba[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = (value, value, value, 255)


def _read_stamp(rgb: np.ndarray) -> int:
    centres = rgb[BLOCK // 2, BLOCK // 2::BLOCK][:BITS].mean(axis=1)
    return int(sum(1 << i for i, c in enumerate(centres) if c > 127))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(size: int, fps: int, seconds: float, warmup: int) -> tuple[dict, list[float], dict]:
    import av

    from liveavatar.output.mpegts import MpegTsFeed
    from liveavatar.types import RenderedFrame

    port = _free_udp_port()
    sent_at: dict[int, int] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        opts = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "32768", "analyzeduration": "0"}
        url = f"udp://127.0.0.1:{port}?timeout=1000000"  # us: ends the read once the feed stops
        try:
            c = av.open(url, format="mpegts", options=opts)
        except av.error.FFmpegError:
            return
        with c:
            stream = c.streams.video[0]
            stream.codec_context.thread_type = "SLICE"  # frame threads would add a frame each
            stream.codec_context.flags |= av.codec.context.Flags.low_delay
            try:
                for f in c.decode(stream):
                    now = time.monotonic_ns()
                    seq = _read_stamp(f.to_ndarray(format="rgb24"))
                    if seq in sent_at and seq >= warmup:
                        latencies.append((now - sent_at[seq]) / 1e6)
                    if stop.is_set():
                        return
            except av.error.FFmpegError:  # the read timed out after the feed stopped
                return

    rx = threading.Thread(target=reader, daemon=True)
    rx.start()
    time.sleep(0.3)
    base = _avatar(size)
    frames = [base.copy() for _ in range(4)]  # rotate buffers: the sink may still read the last one
    feed = MpegTsFeed(f"udp://127.0.0.1:{port}", size, size, fps).start()
    period = 1 / fps
    n = int(seconds * fps) + warmup
    t0 = time.perf_counter()
    for seq in range(n):
        img = frames[seq % 4]
        _stamp(img, seq)
        t = time.monotonic_ns()
        sent_at[seq] = t
        feed.send(RenderedFrame(img, seq, t, t))
        time.sleep(max(0.0, t0 + (seq + 1) * period - time.perf_counter()))
    time.sleep(0.5)
    feed.stop()  # before the reader goes, so the last datagrams still have somewhere to land
    stop.set()
    stats = feed.stats()
    write_ms = feed.write_times_ms()
    rx.join(5)
    return report.stats(write_ms, warmup=warmup), latencies, stats


def run(seconds: float = 10.0, sizes: tuple[int, ...] = (256, 512, 720), fps: int = 30) -> dict:
    rows, extra = [], {}
    for size in sizes:
        write, latencies, stats = _measure(size, fps, seconds, warmup=fps)
        lat = report.stats(latencies)
        rows.append(report.row(f"feed {size}x{size}@{fps} sink write (composite+H.264+send)",
                               write["median"], write["p95"], "ms", f"n={write['n']}"))
        rows.append(report.row(f"feed {size}x{size}@{fps} send -> decoded by a local reader",
                               lat["median"], lat["p95"], "ms",
                               f"n={lat['n']}, dropped {stats['dropped']}/{stats['received']}"))
        extra[str(size)] = {"write_ms": write, "latency_ms": lat, "sink": stats}
    return report.result("feed", rows, **extra)
