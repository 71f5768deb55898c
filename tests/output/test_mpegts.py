"""MpegTsFeed on real frames: what a reader decodes from the UDP stream is the avatar over the
key colour, and the caller is never blocked (frames are dropped and counted instead)."""
from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from liveavatar.errors import UserError
from liveavatar.output.base import Compositor
from liveavatar.output.mpegts import MpegTsFeed, receiver_url, sender_url
from tests.obs.headless import free_port
from tests.output.frames import cutout, over, rendered


class Receiver(threading.Thread):
    """Reads the UDP MPEG-TS stream with FFmpeg (PyAV) and keeps the decoded frames."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.frames, self.error, self.codec = url, [], None, ""

    def run(self) -> None:
        try:
            with av.open(self.url + "?timeout=8000000", format="mpegts", timeout=10) as c:
                stream = c.streams.video[0]
                self.codec = stream.codec_context.name
                for frame in c.decode(stream):
                    self.frames.append(frame.to_ndarray(format="rgb24"))
                    if len(self.frames) >= 20:
                        return
        except Exception as e:  # reported by the test's assertions
            self.error = e


def test_reader_decodes_the_avatar_over_green():
    rgba = cutout("astronaut.png", (320, 240))
    port = free_port(2)  # SOCK_DGRAM
    url = f"udp://127.0.0.1:{port}"
    rx = Receiver(receiver_url(url))
    rx.start()
    time.sleep(0.5)  # let the reader bind before the first datagram
    feed = MpegTsFeed(url, 320, 240, fps=30)
    with feed:
        t0 = time.monotonic_ns()
        sent = 0
        while rx.is_alive() and sent < 150:
            feed.send(rendered(rgba, sent, t0 + sent * 33_333_333))
            sent += 1
            time.sleep(1 / 30)
    rx.join(10)
    assert rx.error is None, rx.error
    assert rx.codec == "h264"
    assert len(rx.frames) >= 20
    decoded = rx.frames[-1].astype(np.int16)
    expected = over(rgba, (0, 255, 0)).astype(np.int16)
    # Lossy H.264 at 4 Mbit/s: close to the source, far from anything else.
    assert np.abs(decoded - expected).mean() < 6
    outside = rgba[..., 3] == 0
    assert np.abs(decoded[outside] - [0, 255, 0]).mean() < 8
    inside = rgba[..., 3] == 255
    assert np.abs(decoded[inside] - expected[inside]).mean() < 8
    stats = feed.stats()
    assert stats["errors"] == 0 and stats["written"] > 0
    assert stats["written"] + stats["dropped"] == stats["received"] == sent


def test_send_drops_instead_of_blocking():
    rgba = cutout("grace_hopper.jpg", (640, 480))
    feed = MpegTsFeed(f"udp://127.0.0.1:{free_port(2)}", 640, 480, fps=30)
    with feed:
        for i in range(200):  # far faster than one encoder thread can take them
            feed.send(rendered(rgba, i, i * 33_333_333))
    s = feed.stats()
    assert s["received"] == 200
    assert s["dropped"] > 0
    assert s["written"] + s["dropped"] == 200


def test_compositor_matches_float_reference():
    rgba = cutout("messi5.jpg", (320, 240))
    for bg in [(0, 255, 0), (255, 0, 255), (0, 0, 0)]:
        got = Compositor(bg).over(rgba).astype(np.int16)
        assert np.abs(got - over(rgba, bg)).max() <= 1


@pytest.mark.parametrize("url, msg", [
    ("srt://127.0.0.1:5601?mode=listener", "SRT is not available"),
    ("rtmp://example/live", "udp://HOST:PORT"),
    ("udp://127.0.0.1", "udp://HOST:PORT"),
])
def test_bad_feed_urls_are_user_errors(url, msg):
    with pytest.raises(UserError, match=msg):
        MpegTsFeed(url, 640, 480)


def test_odd_size_is_a_user_error():
    with pytest.raises(UserError, match="even"):
        MpegTsFeed("udp://127.0.0.1:5600", 641, 480)


def test_sender_url_adds_datagram_size_once():
    assert sender_url("udp://127.0.0.1:5600") == "udp://127.0.0.1:5600?pkt_size=1316"
    assert sender_url("udp://10.0.0.2:7000?pkt_size=188") == "udp://10.0.0.2:7000?pkt_size=188"
