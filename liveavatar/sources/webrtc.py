"""WebRTC ingest: the camera and microphone of a WHIP / browser peer connection, read as fast as
they arrive and handed to a session's input pump, which turns them into what perception takes.

aiortc's receive side is tuned for playback, not for tracking a face: its jitter buffer holds a
frame back until the next one starts, and its receive queue is unbounded. Both are dealt with
here. The service wires these to a session; nothing here knows the server.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError

from liveavatar.runtime import DropOldest, LatestSlot, StageTimer, Worker
from liveavatar.types import VOICE_RATE, AudioChunk, CapturedFrame

log = logging.getLogger("liveavatar.sources.webrtc")

#: Perception gets at most this width; bigger cameras are scaled down in the input pump.
MAX_INPUT_WIDTH = 640

#: (RGB image, arrival ns) -> the frame's capture time from a stamp drawn into it, or None.
CaptureClock = Callable[[np.ndarray, int], "int | None"]


class AudioAnalysis(Protocol):
    """What the input pump needs of perception (flush_audio, when present, is used too)."""

    def process_audio(self, chunk: AudioChunk) -> None: ...


class IngestTarget(Protocol):
    """Where a peer connection's tracks go (a server session)."""

    def receive_video(self, frame: av.VideoFrame, t_arrival_ns: int) -> None: ...

    def receive_audio(self, chunk: AudioChunk) -> None: ...

    def receive_voice(self, frames: list[av.AudioFrame]) -> None: ...

    def end_audio(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# The jitter buffer
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


# ---------------------------------------------------------------------------------------------
# Draining the tracks (on the loop)
# ---------------------------------------------------------------------------------------------

async def drain_video(track: MediaStreamTrack, target: IngestTarget) -> None:
    """Read the camera continuously: aiortc's receive queue is unbounded, so we never let it
    fill; the newest frame goes on to the input pump (latest wins, drops counted)."""
    try:
        while True:
            frame = await track.recv()
            target.receive_video(frame, time.monotonic_ns())  # type: ignore[arg-type]  # a video track
    except MediaStreamError:
        pass


async def drain_audio(track: MediaStreamTrack, target: IngestTarget) -> None:
    """Microphone: to perception (voice features, keywords) and on to viewers (the voice)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
    seq = 0
    try:
        while True:
            frame = await track.recv()
            t = time.monotonic_ns()
            out = resampler.resample(frame)  # type: ignore[arg-type]  # an audio track yields AudioFrames
            target.receive_voice(out)
            for f in out:
                seq += 1
                samples = f.to_ndarray().reshape(-1).astype(np.float32) * (1.0 / 32768.0)
                target.receive_audio(AudioChunk(samples, VOICE_RATE, seq, t))
    except MediaStreamError:   # the microphone track ended: its last word still counts
        target.end_audio()


# ---------------------------------------------------------------------------------------------
# The input pump (its own thread)
# ---------------------------------------------------------------------------------------------

class InputPump(Worker):
    """Per-session input thread: raw video (av frames from WebRTC, or CapturedFrames from a file)
    becomes RGB CapturedFrames for perception, latest wins; audio chunks go to perception in
    order through a bounded buffer that drops the oldest (counted)."""

    def __init__(self, name: str, perception: AudioAnalysis, frames_out: LatestSlot[CapturedFrame],
                 timer: StageTimer, capture_clock: CaptureClock | None = None) -> None:
        super().__init__(f"input-{name}")
        self.name = name
        self.perception = perception
        self.frames_out = frames_out
        self.timer = timer
        self.capture_clock = capture_clock
        self.raw_video: LatestSlot[tuple[av.VideoFrame | CapturedFrame, int]] = LatestSlot()
        self.audio: DropOldest[AudioChunk] = DropOldest(50)
        self.stamped_frames = 0
        self.ingest_ms = 0.0           # capture -> arrival here, smoothed (stamped cameras only)
        self._audio_ended = False      # the microphone track (or a file pass) ended
        self._wake = threading.Event()
        self._seq = 0

    @property
    def audio_dropped(self) -> int:
        return self.audio.dropped

    def put_video(self, frame: av.VideoFrame | CapturedFrame, t_arrival_ns: int) -> None:
        self.raw_video.put((frame, t_arrival_ns))
        self._wake.set()

    def put_audio(self, chunk: AudioChunk) -> None:
        self.audio.put(chunk)
        self._wake.set()

    def end_audio(self) -> None:
        """The audio stopped (track ended, file pass over): decode the speech still pending, after
        the chunks already queued, so the last word said is not lost."""
        self._audio_ended = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self.halted:
            self._wake.wait(0.25)
            self._wake.clear()
            while not self.halted and (chunk := self.audio.pop()) is not None:
                try:
                    self.perception.process_audio(chunk)
                except Exception:  # a bad chunk must not kill the session's input
                    log.exception("session %s: audio analysis failed", self.name)
            if self._audio_ended and not self.audio:
                self._audio_ended = False
                flush = getattr(self.perception, "flush_audio", None)
                if flush is not None:
                    try:
                        flush(2.0)
                    except Exception:
                        log.exception("session %s: decoding the last utterance failed", self.name)
            item = self.raw_video.take_nowait()
            if item is None:
                continue
            raw, t_arrival = item
            with self.timer.measure("decode"):
                captured = self._to_captured(raw, t_arrival)
            self.frames_out.put(captured)

    def _to_captured(self, raw: av.VideoFrame | CapturedFrame, t_arrival: int) -> CapturedFrame:
        if isinstance(raw, CapturedFrame):
            return raw
        frame = raw
        if frame.width > MAX_INPUT_WIDTH:
            h = int(round(frame.height * MAX_INPUT_WIDTH / frame.width / 2)) * 2
            image = frame.to_ndarray(format="rgb24", width=MAX_INPUT_WIDTH, height=h)
        else:
            image = frame.to_ndarray(format="rgb24")
        t_capture = t_arrival
        mapped = self.capture_clock(image, t_arrival) if self.capture_clock is not None else None
        if mapped is not None:
            t_capture = mapped
            self.stamped_frames += 1
            ms = (t_arrival - mapped) / 1e6
            self.timer.record("capture_to_ingest", ms)
            self.ingest_ms += 0.1 * (ms - self.ingest_ms)
        self._seq += 1
        return CapturedFrame(image, self._seq, t_capture)
