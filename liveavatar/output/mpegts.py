"""Low-latency MPEG-TS feed (H.264 over UDP) of the avatar, for OBS's media source.

The avatar's transparent background is filled with a solid key colour (green by default) that
`liveavatar obs setup` removes again with a chroma-key filter in OBS.

Only UDP is offered: PyAV's bundled FFmpeg is built without libsrt (an `srt://` output fails
with "Protocol not found" at the first packet), so SRT would need a system FFmpeg subprocess.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from liveavatar.errors import UserError
from liveavatar.output.base import Compositor, FrameSink
from liveavatar.types import RenderedFrame

#: 7 TS packets of 188 bytes: one UDP datagram under any normal MTU, no IP fragmentation.
TS_PACKET_SIZE = 1316
#: H.264 time base: the 90 kHz MPEG clock, so pts can follow real render times.
TIME_BASE = Fraction(1, 90_000)


def sender_url(url: str) -> str:
    """Validate a feed URL and return what the sender opens (UDP with a safe datagram size)."""
    parts = urlsplit(url)
    if parts.scheme == "srt":
        raise UserError(f"feed URL {url!r}: SRT is not available (PyAV's bundled FFmpeg has no "
                        "libsrt); use udp://HOST:PORT")
    if parts.scheme != "udp" or not parts.hostname or not parts.port:
        raise UserError(f"feed URL {url!r} must look like udp://HOST:PORT (e.g. udp://127.0.0.1:5600)")
    query = dict(parse_qsl(parts.query))
    query.setdefault("pkt_size", str(TS_PACKET_SIZE))
    return urlunsplit(("udp", parts.netloc, "", urlencode(query), ""))


def receiver_url(url: str) -> str:
    """What a reader (OBS's media source) opens for this feed: the same address, no sender options."""
    parts = urlsplit(url)
    return f"udp://{parts.hostname}:{parts.port}"


class MpegTsFeed(FrameSink):
    """H.264 (libx264 ultrafast/zerolatency, yuv420p) in MPEG-TS to `url`, on its own thread."""

    kind = "mpegts"

    def __init__(self, url: str, width: int, height: int, fps: int = 30,
                 background: tuple[int, int, int] = (0, 255, 0), bitrate_kbps: int = 4000) -> None:
        super().__init__()
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise UserError(f"feed size {width}x{height}: width and height must be even and > 0 "
                            "(H.264 4:2:0)")
        if not 1 <= fps <= 120:
            raise UserError(f"feed fps {fps} must be between 1 and 120")
        self.url = url
        self._open_url = sender_url(url)
        self.width, self.height, self.fps = width, height, fps
        self.bitrate_kbps = bitrate_kbps
        self._compositor = Compositor(background)
        self._container: Any = None    # av.OutputContainer once open
        self._stream: Any = None
        self._first_ns: int | None = None
        self._last_pts = -1

    def _open(self) -> None:
        import av
        try:
            # flush_packets: each frame leaves in its own datagrams at once instead of its
            # tail waiting in the output buffer for the next frame (one frame of latency).
            self._container = av.open(self._open_url, mode="w", format="mpegts",
                                      options={"flush_packets": "1", "omit_video_pes_length": "0"})
        except av.error.FFmpegError as e:
            raise UserError(f"cannot open feed {self.url!r}: {e}") from e
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        stream.bit_rate = self.bitrate_kbps * 1000
        # A keyframe every second lets a reader that joins mid-stream (OBS restarting its
        # source) show a picture within a second; zerolatency turns off lookahead and B-frames.
        stream.gop_size = self.fps
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        self._stream = stream

    def _write(self, frame: RenderedFrame) -> None:
        import av
        rgb = self._compositor.over(frame.rgba)
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        # pts from render time, so dropped frames keep real timing; strictly increasing for x264.
        if self._first_ns is None:
            self._first_ns = frame.t_rendered_ns
        pts = max((frame.t_rendered_ns - self._first_ns) * 9 // 100_000, self._last_pts + 1)
        self._last_pts = pts
        vf.pts, vf.time_base = pts, TIME_BASE
        # The encoder rescales to the stream size if a frame differs (e.g. a character switch).
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def _close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
