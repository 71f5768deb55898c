"""The viewers' voice track: steady 20 ms cadence whatever the arrival pattern, a delay steered
towards the session's target by dropping late frames or sending silence, continuous timestamps,
and one Opus encode for every viewer."""
from __future__ import annotations

import asyncio
import time

import av
import numpy as np

from liveavatar.output.webrtc import VoiceTrack

RATE = 48000


class _Session:
    def __init__(self, delay_ms: float) -> None:
        self.delay_ms = delay_ms

    def voice_delay_ms(self) -> float:
        return self.delay_ms


def _frame(value: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(np.full((1, RATE // 50), value, np.int16), format="s16", layout="mono")
    f.sample_rate = RATE
    return f


def _value(frame: av.AudioFrame) -> int:
    return int(frame.to_ndarray()[0, 0])


async def test_a_burst_leaves_paced_in_order_with_continuous_timestamps():
    track = VoiceTrack(_Session(delay_ms=0))
    track.push_many([_frame(v) for v in range(1, 6)])   # 100 ms of voice arriving at once
    t0 = time.monotonic()
    out = [await track.next_frame() for _ in range(5)]
    elapsed = time.monotonic() - t0
    assert [_value(f) for f in out] == list(range(1, 6))
    assert [f.pts for f in out] == [i * (RATE // 50) for i in range(5)]
    # Paced on the audio clock (4 intervals of 20 ms after the first), not sent as a burst.
    assert elapsed >= 0.9 * 4 * 0.020
    assert track.dropped == 0 and track.silence_sent == 0


async def test_underrun_sends_silence_and_keeps_the_clock():
    track = VoiceTrack(_Session(delay_ms=0))
    track.push_many([_frame(7)])
    first = await track.next_frame()
    gap = [await track.next_frame() for _ in range(3)]        # the microphone went quiet
    assert _value(first) == 7
    assert all(not f.to_ndarray().any() for f in gap)
    assert track.silence_sent == 3
    assert [f.pts for f in gap] == [960, 1920, 2880]


async def test_frames_running_later_than_the_target_are_dropped_to_catch_up():
    track = VoiceTrack(_Session(delay_ms=20))
    stale = time.monotonic_ns() - 500_000_000            # queued half a second ago
    for v in range(1, 6):
        track._frames.put((_frame(v), stale))
    track.push_many([_frame(99)])
    track._next_due_ns = time.monotonic_ns()
    out = await track.next_frame()
    assert _value(out) == 99
    assert track.dropped == 5


async def test_frames_not_yet_due_wait_behind_silence():
    track = VoiceTrack(_Session(delay_ms=200))
    track.push_many([_frame(5)])
    track._next_due_ns = time.monotonic_ns()             # the cadence is already running
    out = await track.next_frame()
    assert not out.to_ndarray().any(), "a frame 200 ms early must not leave yet"
    assert len(track._frames) == 1
    await asyncio.sleep(0)


async def test_odd_sized_input_leaves_as_20_ms_opus_packets_a_decoder_plays():
    track = VoiceTrack(_Session(delay_ms=0))
    t = np.arange(RATE // 2)                              # 0.5 s of a 440 Hz tone ...
    tone = (np.sin(2 * np.pi * 440 * t / RATE) * 8000).astype(np.int16)
    chunks = []
    for i in range(0, len(tone), 1024):                   # ... arriving in 1024-sample chunks
        f = av.AudioFrame.from_ndarray(tone[None, i:i + 1024], format="s16", layout="mono")
        f.sample_rate = RATE
        chunks.append(f)
    track.push_many(chunks)
    decoder = av.CodecContext.create("opus", "r")
    packets = [await track.recv() for _ in range(20)]
    assert all(isinstance(p, av.Packet) and p.size > 0 for p in packets)
    pts = [p.pts for p in packets]
    assert all(b - a == RATE // 50 for a, b in zip(pts, pts[1:])), "20 ms apart on the RTP clock"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(p)])
    assert decoded.size >= 19 * RATE // 50
    assert np.abs(decoded[RATE // 10:]).max() > 0.1 * (1 if decoded.dtype.kind == "f" else 32768)
