"""The ingest jitter buffer hands a camera frame on at its last packet (RTP marker), not one
frame later when the next frame starts, and audio packets as they come in order."""
from __future__ import annotations

from aiortc.rtp import RtpPacket

from liveavatar.sources.webrtc import LowLatencyJitterBuffer


def _packet(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = payload
    return p


def test_video_frame_leaves_at_its_marker_packet():
    jb = LowLatencyJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(100, 3000, b"a"))[1] is None
    assert jb.add(_packet(101, 3000, b"b"))[1] is None
    frame = jb.add(_packet(102, 3000, b"c", marker=True))[1]
    assert frame is not None and frame.data == b"abc" and frame.timestamp == 3000
    # the next frame starts clean
    assert jb.add(_packet(103, 6000, b"d"))[1] is None
    frame = jb.add(_packet(104, 6000, b"e", marker=True))[1]
    assert frame.data == b"de" and frame.timestamp == 6000


def test_video_frame_with_a_gap_waits_for_the_missing_packet():
    jb = LowLatencyJitterBuffer(capacity=128, is_video=True)
    jb.add(_packet(10, 90, b"a"))
    assert jb.add(_packet(12, 90, b"c", marker=True))[1] is None    # 11 not here yet
    frame = jb.add(_packet(11, 90, b"b"))[1]                       # retransmitted (NACK)
    assert frame.data == b"abc"


def test_video_without_marker_falls_back_to_the_next_frame_rule():
    jb = LowLatencyJitterBuffer(capacity=128, is_video=True)
    jb.add(_packet(1, 90, b"a"))
    frame = jb.add(_packet(2, 180, b"b"))[1]
    assert frame.data == b"a" and frame.timestamp == 90


def test_audio_packets_leave_at_once_in_order():
    jb = LowLatencyJitterBuffer(capacity=16)
    assert jb.add(_packet(5, 960, b"x"))[1].data == b"x"
    assert jb.add(_packet(7, 2880, b"z"))[1] is None                # 6 missing: wait
    assert jb.add(_packet(6, 1920, b"y"))[1].data == b"y"
