"""WebRTC egress: the avatar video and the streamer's voice as aiortc tracks, and what feeds
them from the render thread.

The render thread packs each frame into the two layouts viewers use (Packer) and publishes it
(FramePublisher); tracks await the next frame on the loop and never block it. Our own pages all
share one VP8 encode per session (SharedEncoder -> SharedVideoTrack); other players get frames
relayed and encoded per viewer (AvatarTrack). The voice is paced and Opus-encoded once for all
viewers (VoiceTrack). Nothing here knows the server.
"""
from __future__ import annotations

import asyncio
import fractions
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

from liveavatar.runtime import DropOldest, LatestSlot, LoopWakeup, StageTimer, Worker
from liveavatar.types import VOICE_RATE, RenderedFrame

log = logging.getLogger("liveavatar.output.webrtc")

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
#: Cap on how far the voice is held back to line up with the (slower) avatar video.
MAX_VOICE_DELAY_MS = 400.0

#: Paints a stamp (capture ms, sent ms, events) into the strip rows under a packed frame.
StampPainter = Callable[[np.ndarray, tuple[int, int, int]], None]


# ---------------------------------------------------------------------------------------------
# Frames handed from the render thread to the asyncio side
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Published:
    seq: int
    events: int                    # control events applied up to this frame's tick
    frame: RenderedFrame
    packed: av.VideoFrame | None   # colour|alpha side by side + timecode strip, yuv420p
    flat: av.VideoFrame | None     # composited over the flat background, yuv420p


class FramePublisher:
    """Newest published frame plus wake-ups for coroutines waiting on the loop. `publish` is
    called from the render thread; waiters never block the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.latest: Published | None = None
        self._wakeup = LoopWakeup(loop)

    def publish(self, item: Published) -> None:
        self.latest = item
        self._wakeup.notify_threadsafe()

    async def wait_newer(self, seq: int) -> Published:
        while self.latest is None or self.latest.seq <= seq:
            await self._wakeup.wait()
        return self.latest


class Packer:
    """RGBA -> the two WebRTC layouts, into buffers allocated once per session. OpenCV's SIMD
    premultiply and RGB -> I420 do in ~1 ms what numpy + swscale did in ~9 ms on the render
    thread (same BT.601 limited-range matrix as swscale's default). The strip rows under the
    packed picture carry a stamp from `paint_stamp` (left black without one)."""

    def __init__(self, size: int, flat_bg: tuple[int, int, int], flat_strip: bool, strip_rows: int = 16,
                 paint_stamp: StampPainter | None = None) -> None:
        self.size = size
        self.packed = np.zeros((size + strip_rows, 2 * size, 3), np.uint8)
        self.flat = np.zeros((size + (strip_rows if flat_strip else 0), size, 3), np.uint8)
        self._premult = np.empty((size, size, 4), np.uint8)
        self._rgb = np.empty((size, size, 3), np.uint8)
        self._inv = np.empty((size, size, 3), np.uint8)
        self._bg: Any = tuple(float(c) for c in flat_bg) + (0.0,)   # cv2 takes a scalar tuple
        self.flat_strip = flat_strip
        self._paint_stamp = paint_stamp

    def _premultiply(self, rgba: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.ascontiguousarray(rgba), cv2.COLOR_RGBA2mRGBA, dst=self._premult)

    @staticmethod
    def _yuv420(rgb: np.ndarray) -> av.VideoFrame:
        i420: np.ndarray = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        return av.VideoFrame.from_ndarray(i420, format="yuv420p")

    def pack(self, rgba: np.ndarray, stamp: tuple[int, int, int]) -> av.VideoFrame:
        s = self.size
        # cv2 writes straight into the halves (numpy's strided copies took 1.5 ms each)
        cv2.cvtColor(self._premultiply(rgba), cv2.COLOR_RGBA2RGB, dst=self.packed[:s, :s])
        cv2.cvtColor(cv2.extractChannel(rgba, 3), cv2.COLOR_GRAY2RGB, dst=self.packed[:s, s:])
        if self._paint_stamp is not None:
            self._paint_stamp(self.packed[s:], stamp)
        return self._yuv420(self.packed)

    def compose_flat(self, rgba: np.ndarray, stamp: tuple[int, int, int]) -> av.VideoFrame:
        s = self.size
        m = cv2.cvtColor(self._premultiply(rgba), cv2.COLOR_RGBA2RGB, dst=self._rgb)
        # premultiplied colour + (1 - alpha) x background
        cv2.cvtColor(255 - cv2.extractChannel(rgba, 3), cv2.COLOR_GRAY2RGB, dst=self._inv)
        cv2.add(m, cv2.multiply(self._inv, self._bg, scale=1 / 255.0), dst=self.flat[:s])
        if self.flat_strip and self._paint_stamp is not None:
            self._paint_stamp(self.flat[s:], stamp)
        return self._yuv420(self.flat)


# ---------------------------------------------------------------------------------------------
# Video tracks (one source per session and layout, fanned out to viewers by MediaRelay)
# ---------------------------------------------------------------------------------------------

class AvatarTrack(MediaStreamTrack):
    """The session's avatar video. `layout` is 'packed' (colour|alpha side by side plus the
    timecode strip, for our pages) or 'flat' (composited over a background, for WHEP players).
    recv() awaits the render thread's next frame; it never blocks the loop."""

    kind = "video"

    def __init__(self, publisher: FramePublisher, layout: str) -> None:
        super().__init__()
        self.publisher = publisher
        self.layout = layout
        self._seq = 0
        self._t0: int | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            pub = await self.publisher.wait_newer(self._seq)
            self._seq = pub.seq
            vf = pub.packed if self.layout == "packed" else pub.flat
            if vf is not None:
                break
        if self._t0 is None:
            self._t0 = pub.frame.t_rendered_ns
        vf.pts = (pub.frame.t_rendered_ns - self._t0) * VIDEO_CLOCK // 1_000_000_000
        vf.time_base = VIDEO_TIME_BASE
        return vf


@dataclass(slots=True)
class EncodedPacket:
    seq: int
    packet: av.Packet
    keyframe: bool


class PacketRing:
    """The last few encoded packets, in order. Unlike raw frames, encoded packets cannot be
    skipped (each delta frame builds on the previous one), so every viewer reads them in order;
    one that falls further behind than the ring resynchronises at the next keyframe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = 90) -> None:
        self.items: DropOldest[EncodedPacket] = DropOldest(size)
        self.last_seq = 0
        self._wakeup = LoopWakeup(loop)

    def publish(self, item: EncodedPacket) -> None:  # encoder thread
        self._wakeup.notify_threadsafe(self._append, item)

    def _append(self, item: EncodedPacket) -> None:  # on the loop
        self.items.put(item)
        self.last_seq = item.seq

    async def next_after(self, seq: int) -> EncodedPacket | None:
        """The packet after `seq`; None when it already left the ring (the reader is too slow)."""
        while self.last_seq <= seq:
            await self._wakeup.wait()
        first = self.items[0].seq
        if seq + 1 < first:
            return None
        return self.items[seq + 1 - first]


class SharedEncoder(Worker):
    """ONE VP8 encode of a session's packed frames for all of its viewers: each viewer's RTP
    sender only packetizes (aiortc sends pre-encoded packets as they are). Runs on its own
    thread, fed latest-wins by the render thread. Keyframes every 2 s, and at once when a viewer
    joins or reports loss, since a shared stream cannot adapt to each viewer."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, timer: StageTimer, width: int, height: int,
                 fps: int, bitrate: int = 1_500_000) -> None:
        super().__init__(f"encode-{name}")
        self.frames: LatestSlot[av.VideoFrame] = LatestSlot()
        self.packets = PacketRing(loop)
        self.width, self.height, self.fps, self.bitrate = width, height, fps, bitrate
        self._keyframe = threading.Event()
        self.encoded = 0
        self.keyframes = 0
        self.timer = timer

    def submit(self, frame: av.VideoFrame) -> None:
        self.frames.put(frame)

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def wake(self) -> None:
        self.frames.close()

    def run(self) -> None:
        codec: Any = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = self.width, self.height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = self.fps
        codec.bit_rate = self.bitrate
        codec.gop_size = 2 * self.fps
        # One thread: libvpx's worker threads wait on each other, and on a busy machine that
        # took a 1024x528 frame from 6 ms to 250 ms. Fastest realtime preset: flat-shaded art.
        codec.thread_count = 1
        codec.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0",
                         "error-resilient": "1", "auto-alt-ref": "0", "max-intra-rate": "300",
                         "static-thresh": "1"}  # the avatar is mostly still: skip unchanged blocks
        seq = 0
        last_pts = -1
        last_forced = 0.0
        while not self.halted:
            frame = self.frames.take(0.25)
            if frame is None:
                continue
            if frame.pts is None or frame.pts <= last_pts:
                frame.pts = last_pts + 1
            last_pts = frame.pts
            # Forced keyframes are big: at most two a second, however many viewers ask (a PLI
            # storm from one lossy viewer must not turn every frame into a keyframe).
            now = time.monotonic()
            if self._keyframe.is_set() and now - last_forced >= 0.5:
                self._keyframe.clear()
                last_forced = now
                frame.pict_type = av.video.frame.PictureType.I
            else:
                frame.pict_type = av.video.frame.PictureType.NONE
            t0 = time.perf_counter()
            try:
                packets = codec.encode(frame)
            except av.error.FFmpegError:
                log.exception("shared VP8 encode failed")
                continue
            self.timer.record("encode", (time.perf_counter() - t0) * 1e3)
            for p in packets:
                seq += 1
                self.encoded += 1
                self.keyframes += bool(p.is_keyframe)
                self.packets.publish(EncodedPacket(seq, p, bool(p.is_keyframe)))


class SharedVideoTrack(MediaStreamTrack):
    """One viewer's view of a SharedEncoder: starts at a keyframe, then passes every packet."""

    kind = "video"

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sender: RTCRtpSender | None = None   # set after addTrack, to notice the viewer's loss reports
        self._seq = 0
        self._started = False

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        ring = self.encoder.packets
        if not self._started:
            self._seq = max(self._seq, ring.last_seq)  # join live, not from the ring's history
            self.encoder.request_keyframe()
        elif self.sender is not None and getattr(self.sender, "_RTCRtpSender__force_keyframe", False):
            # aiortc records a viewer's PLI/FIR here; with a shared encode we honour it for all.
            self.sender._RTCRtpSender__force_keyframe = False  # type: ignore[attr-defined]
            self.encoder.request_keyframe()
        while True:
            item = await ring.next_after(self._seq)
            if item is None:  # fell behind the ring: resynchronise at the next keyframe
                self._started = False
                self._seq = ring.last_seq
                self.encoder.request_keyframe()
                continue
            self._seq = item.seq
            if self._started or item.keyframe:
                self._started = True
                return item.packet


# ---------------------------------------------------------------------------------------------
# The voice
# ---------------------------------------------------------------------------------------------

class VoiceTiming(Protocol):
    """How long the voice must wait to meet the avatar frames of the same moment (a session)."""

    def voice_delay_ms(self) -> float: ...


class VoiceTrack(MediaStreamTrack):
    """The streamer's voice for viewers: held back so it stays in sync with the avatar's lips,
    sent on a steady 20 ms clock, and encoded to Opus here, once for every viewer.

    Steady pacing keeps lips in sync: the delay (server.session.VOICE_LEAD_MS) assumes a small,
    steady audio buffer at the viewer. Voice forwarded as it arrived (bursty: the browser,
    aiortc's receive buffer and a busy loop) made Chromium's audio buffer grow to ~175 ms. So
    frames leave on a clock; the queue depth sets the delay and is steered towards the target by
    dropping a frame (too late) or sending 20 ms of silence (too early). Encoding here, in ~0.3 ms
    on the loop, also spares each viewer's sender its round trip through aiortc's thread pool for every packet.
    Bounded: at most 2 s buffered."""

    kind = "audio"
    FRAME = VOICE_RATE // 50          # 20 ms: one Opus frame
    # How far a frame's wait may exceed its target before frames are dropped: wide, because the
    # frames of a burst arrived early and wait longer without being late.
    LATE_SLACK_MS = 120.0
    EARLY_SLACK_MS = 40.0   # how much sooner than its target a frame may leave

    def __init__(self, timing: VoiceTiming, bitrate: int = 48000) -> None:
        super().__init__()
        self.timing = timing
        self._frames: DropOldest[tuple[av.AudioFrame, int]] = DropOldest(100)
        self._wake = asyncio.Event()
        self._samples = 0
        self._next_due_ns: int | None = None
        # Whatever size frames come in (camera audio, file chunks), 20 ms frames go out.
        self._rechunk = av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE, frame_size=self.FRAME)
        self._opus = av.CodecContext.create("libopus", "w")
        self._opus.sample_rate, self._opus.layout, self._opus.format = VOICE_RATE, "mono", "s16"
        self._opus.bit_rate = bitrate
        self._opus.time_base = fractions.Fraction(1, VOICE_RATE)
        self._opus.options = {"application": "voip"}
        self.dropped = 0           # frames discarded: queue full, or the voice ran too late
        self.silence_sent = 0      # 20 ms silences sent: underrun, or the voice ran too early

    def push_many(self, frames: list[av.AudioFrame]) -> None:
        now = time.monotonic_ns()
        for f in frames:
            f.pts = None       # the resampler keeps its own count
            for chunk in self._rechunk.resample(f):
                self.dropped += self._frames.put((chunk, now))
        self._wake.set()

    def target_delay_ns(self) -> int:
        return int(min(self.timing.voice_delay_ms(), MAX_VOICE_DELAY_MS) * 1e6)

    def _silence(self) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(np.zeros((1, self.FRAME), np.int16), format="s16", layout="mono")
        frame.sample_rate = VOICE_RATE
        return frame

    async def next_frame(self) -> av.AudioFrame:
        """The next 20 ms of voice (or silence), at its time on the 20 ms clock."""
        if self._next_due_ns is None:   # nothing sent yet: start with the first voice frame
            while not self._frames:
                self._wake.clear()
                await self._wake.wait()
            self._next_due_ns = self._frames[0][1] + self.target_delay_ns()
        wait = (self._next_due_ns - time.monotonic_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        now = time.monotonic_ns()
        if now - self._next_due_ns > 200_000_000:   # the loop stalled: restart the cadence, no burst
            self._next_due_ns = now
        target = self.target_delay_ns()
        late, early = target + int(self.LATE_SLACK_MS * 1e6), target - int(self.EARLY_SLACK_MS * 1e6)
        while len(self._frames) > 1 and now - self._frames[0][1] > late:
            self._frames.pop()       # running late: catch up
            self.dropped += 1
        if self._frames and now - self._frames[0][1] >= early:
            item = self._frames.pop()
            assert item is not None
            frame = item[0]
        else:                        # nothing due yet (running early) or nothing at all
            frame = self._silence()
            self.silence_sent += 1
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, VOICE_RATE)
        self._samples += frame.samples
        self._next_due_ns += frame.samples * 1_000_000_000 // VOICE_RATE
        return frame

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            for packet in self._opus.encode(await self.next_frame()):
                return packet     # libopus: one packet per 20 ms frame, at once
