"""aiortc glue: ingest readers, the avatar and voice output tracks, SDP helpers."""
from __future__ import annotations

import asyncio
import fractions
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError

from liveavatar.runtime import DropOldest, LatestSlot, LoopWakeup, Worker
from liveavatar.server.config import ServerConfig
from liveavatar.server.engine import VOICE_RATE, Session
from liveavatar.types import AudioChunk

log = logging.getLogger("liveavatar.server")

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
#: Cap on how far the voice is held back to line up with the (slower) avatar video.
MAX_VOICE_DELAY_MS = 400.0


def new_peer_connection(cfg: ServerConfig) -> RTCPeerConnection:
    """No ICE servers unless configured: aiortc's default public STUN server would stall
    offline machines (see notes/webrtc-browser-tests.md)."""
    servers = []
    if cfg.ice_servers:
        servers = [RTCIceServer(urls=cfg.ice_servers, username=cfg.ice_username,
                                credential=cfg.ice_credential)]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


# ---------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------

class LowLatencyJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer hands a frame on only when the first packet of the NEXT frame
    arrives: one frame interval (33 ms at 30 fps) of camera latency, and 4 x 20 ms of audio
    prefetch. This one hands a video frame on as soon as its last packet (the RTP marker bit,
    RFC 7741 / RFC 6184) has arrived with every packet before it, and an audio packet (a whole
    Opus frame) as soon as it is next in order."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        origin = self._origin
        assert origin is not None     # aiortc calls this only once a packet has set the origin
        if not self._is_video:
            packet = self._packets[origin % self._capacity]
            if packet is None:
                return None
            self.remove(1)
            return JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
        packets = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                break
            timestamp = packet.timestamp
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                                   timestamp=timestamp)
        return super()._remove_frame(sequence_number)   # no marker seen: aiortc's rule


def use_low_latency_jitter_buffers(pc: RTCPeerConnection) -> None:
    """Swap the receivers' jitter buffers of a freshly negotiated ingest connection (before any
    media arrives). aiortc exposes no option for this, hence the name-mangled attribute."""
    for t in pc.getTransceivers():
        r = t.receiver
        if r is None or not hasattr(r, "_RTCRtpReceiver__jitter_buffer"):
            continue
        if t.kind == "video":
            r._RTCRtpReceiver__jitter_buffer = LowLatencyJitterBuffer(capacity=512, is_video=True)
        else:
            r._RTCRtpReceiver__jitter_buffer = LowLatencyJitterBuffer(capacity=16)


async def drain_video(track: MediaStreamTrack, session: Session) -> None:
    """Read the camera continuously: aiortc's receive queue is unbounded, so we never let it
    fill; the newest frame goes to the session's input pump (latest wins, drops counted)."""
    try:
        while True:
            frame = await track.recv()
            session.frames_received.count += 1
            session.input.put_video(frame, time.monotonic_ns())
    except MediaStreamError:
        pass


async def drain_audio(track: MediaStreamTrack, session: Session) -> None:
    """Microphone: to perception (voice features, keywords) and on to viewers (the voice)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
    seq = 0
    try:
        while True:
            frame = await track.recv()
            t = time.monotonic_ns()
            out = resampler.resample(frame)  # type: ignore[arg-type]  # an audio track yields AudioFrames
            if session.voice is not None:
                session.voice.push_many(out)
            for f in out:
                seq += 1
                samples = f.to_ndarray().reshape(-1).astype(np.float32) * (1.0 / 32768.0)
                session.input.put_audio(AudioChunk(samples, VOICE_RATE, seq, t))
    except MediaStreamError:   # the microphone track ended: its last word still counts
        session.input.end_audio()


# ---------------------------------------------------------------------------------------------
# Output tracks (one source per session and layout, fanned out to viewers by MediaRelay)
# ---------------------------------------------------------------------------------------------

class AvatarTrack(MediaStreamTrack):
    """The session's avatar video. `layout` is 'packed' (colour|alpha side by side plus the
    timecode strip, for our pages) or 'flat' (composited over a background, for WHEP players).
    recv() awaits the render thread's next frame; it never blocks the loop."""

    kind = "video"

    def __init__(self, session: Session, layout: str) -> None:
        super().__init__()
        self.session = session
        self.layout = layout
        self._seq = 0
        self._t0: int | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            pub = await self.session.publisher.wait_newer(self._seq)
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

    def __init__(self, session: Session, width: int, height: int, fps: int,
                 bitrate: int = 1_500_000) -> None:
        super().__init__(f"encode-{session.sid}")
        self.frames: LatestSlot[av.VideoFrame] = LatestSlot()
        self.packets = PacketRing(session.engine.loop)
        self.width, self.height, self.fps, self.bitrate = width, height, fps, bitrate
        self._keyframe = threading.Event()
        self.encoded = 0
        self.keyframes = 0
        self.timer = session.timer

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


def shared_encoder_for(session: Session, cfg: ServerConfig, strip_rows: int) -> SharedEncoder:
    """The session's one VP8 encode of its packed frames, started on first use."""
    if session.shared_encoder is None:
        session.shared_encoder = SharedEncoder(session, 2 * cfg.size, cfg.size + strip_rows, cfg.fps)
        session.shared_encoder.start()
    return session.shared_encoder


class SharedVideoTrack(MediaStreamTrack):
    """One viewer's view of a SharedEncoder: starts at a keyframe, then passes every packet."""

    kind = "video"

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sender = None            # set after addTrack, to notice the viewer's loss reports
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
            self.sender._RTCRtpSender__force_keyframe = False
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


class VoiceTrack(MediaStreamTrack):
    """The streamer's voice for viewers: held back so it stays in sync with the avatar's lips,
    sent on a steady 20 ms clock, and encoded to Opus here, once for every viewer.

    Steady pacing keeps lips in sync: the delay (engine.VOICE_LEAD_MS) assumes a small, steady
    audio buffer at the viewer. Voice forwarded as it arrived (bursty: the browser, aiortc's
    receive buffer and a busy loop) made Chromium's audio buffer grow to ~175 ms. So frames
    leave on a clock; the queue depth sets the delay and is steered towards the target by
    dropping a frame (too late) or sending 20 ms of silence (too early). Encoding here, in ~0.3 ms
    on the loop, also spares each viewer's sender its round trip through aiortc's thread pool for every packet.
    Bounded: at most 2 s buffered."""

    kind = "audio"
    FRAME = VOICE_RATE // 50          # 20 ms: one Opus frame
    # How far a frame's wait may exceed its target before frames are dropped: wide, because the
    # frames of a burst arrived early and wait longer without being late.
    LATE_SLACK_MS = 120.0
    EARLY_SLACK_MS = 40.0   # how much sooner than its target a frame may leave

    def __init__(self, session: Session, bitrate: int = 48000) -> None:
        super().__init__()
        self.session = session
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
        return int(min(self.session.voice_delay_ms(), MAX_VOICE_DELAY_MS) * 1e6)

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


# ---------------------------------------------------------------------------------------------
# SDP
# ---------------------------------------------------------------------------------------------

_RTPMAP = re.compile(r"a=rtpmap:(\d+) (VP8|VP9|H264)/90000", re.I)
_FMTP = re.compile(r"a=fmtp:(\d+) (.*)")


def add_bitrate_hints(sdp: str, min_kbps: int = 800, start_kbps: int = 1000, max_kbps: int = 2500) -> str:
    """Tell Chromium (the sender) to keep a usable bitrate: aiortc's REMB otherwise holds it at
    300-700 kbps and the camera drops to 320x240, which hurts tracking."""
    hint = f"x-google-min-bitrate={min_kbps};x-google-start-bitrate={start_kbps};x-google-max-bitrate={max_kbps}"
    lines = sdp.replace("\r\n", "\n").split("\n")
    video_pts = {m.group(1) for line in lines if (m := _RTPMAP.match(line))}
    with_fmtp = set()
    out = []
    for line in lines:
        m = _FMTP.match(line)
        if m and m.group(1) in video_pts:
            line = f"{line};{hint}"
            with_fmtp.add(m.group(1))
        out.append(line)
    final = []
    for line in out:
        final.append(line)
        m = _RTPMAP.match(line)
        if m and m.group(1) not in with_fmtp:
            final.append(f"a=fmtp:{m.group(1)} {hint}")
    return "\r\n".join(final)


def check_offer(sdp: str) -> None:
    """Cheap structural checks before aiortc sees the offer, so garbage gets a clear 400."""
    from liveavatar.errors import UserError
    text = sdp.strip()
    if not text.startswith("v=0"):
        raise UserError("malformed SDP offer: it must start with 'v=0'")
    if "\nm=" not in text.replace("\r\n", "\n"):
        raise UserError("malformed SDP offer: no media section (m=audio / m=video)")
    if "a=fingerprint:" not in text:
        raise UserError("malformed SDP offer: no DTLS fingerprint (a=fingerprint)")
    if "a=ice-ufrag:" not in text:
        raise UserError("malformed SDP offer: no ICE credentials (a=ice-ufrag)")


# FFmpeg's WHIP muxer (`-f whip`, FFmpeg 8) as built into the PyAV wheel (TLS via GnuTLS) makes
# its own DTLS certificate on an ECDSA P-224 key (seen in its handshake). The OpenSSL that
# aiortc runs on (the cryptography wheel's, 4.x) no longer knows P-224 as a TLS group, so the
# handshake stops with illegal_parameter
# (wrong curve) whichever side is the DTLS client: FFmpeg then reports "DTLS session failed"
# with its default role and with whip_flags=dtls_active alike. ICE, the SDP and the SRTP
# profiles are fine; nothing in the answer can change the muxer's key. A P-256 certificate
# given to the muxer (its cert_file / key_file options) gets through and the camera reaches the
# avatar (tests/interop/test_ffmpeg_whip.py).
FFMPEG_WHIP_HINT = ("a WHIP publisher that looks like FFmpeg's muxer failed the DTLS handshake: its own "
                    "certificate is ECDSA P-224, which this service's OpenSSL refuses; give it a P-256 "
                    "certificate with -cert_file/-key_file (see the README, 'WHIP with FFmpeg')")


def looks_like_ffmpeg_whip(offer_sdp: str) -> bool:
    return "s=FFmpegPublishSession" in offer_sdp or "\no=FFmpeg " in offer_sdp.replace("\r\n", "\n")
