"""Live perception with vision in a child process (what `serve` uses): real MediaPipe on real
video, voice merged in this process, calibration without blocking, and a crashed child that
is reported, then restarted."""
from __future__ import annotations

import os
import time

import numpy as np

from liveavatar.perception import process as pp
from liveavatar.perception.process import PerceptionProcess
from liveavatar.types import FF, AudioChunk, CapturedFrame
from tests.media import path, read_wav

from .conftest import frame, video_frames


def test_vision_in_a_child_process_tracks_a_real_person_and_merges_voice():
    frames = video_frames("messi_sway.mp4", limit=45)
    speech, rate = read_wav(path("speech_hello.wav"))
    with PerceptionProcess(keywords=["hello"]) as p:
        assert p.process.pid != os.getpid() and p.process.is_alive()
        cues = []
        hop = rate // 30
        for i, f in enumerate(frames):
            chunk = speech[i * hop:(i + 1) * hop]
            if len(chunk):
                p.process_audio(AudioChunk(chunk.astype(np.float32), rate, i, int(i / 30 * 1e9)))
            cues.append(p.process_video(frame(f, i, i / 30)))
        assert cues[-1].seq == len(frames) - 1
        assert sum(c.pose.present for c in cues[-15:]) >= 12, "the person's body is tracked"
        assert cues[-1].image_size == (frames[0].shape[1], frames[0].shape[0])
        deadline = time.monotonic() + 10
        while not p.process_video(frame(frames[-1], 99, 3.0)).voice.present and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.process_video(frame(frames[-1], 100, 3.1)).voice.present, "voice features merged in"
        stats = p.stats()
        assert stats["frames"] > 0 and "pose" in stats["ms"] and stats["vision_process_restarts"] == 0


def test_calibration_goes_with_the_next_frames_and_never_blocks():
    frames = video_frames("astronaut_talk.mp4", limit=30)
    with PerceptionProcess() as p:
        t0 = time.perf_counter()
        p.start_calibration(0.3)
        assert time.perf_counter() - t0 < 0.01
        for i, f in enumerate(frames):
            p.process_video(frame(f, i, i / 30))
        time.sleep(0.6)   # the child reports stats twice a second
        p.process_video(frame(frames[-1], 50, 2.0))
        assert p.stats()["calibration"].startswith("ok")
        assert p.process_video(frame(frames[-1], 51, 2.1)).expression[FF["smile"]] >= 0.0


def test_a_dead_vision_process_is_reported_then_restarted(monkeypatch):
    monkeypatch.setattr(pp, "RESTART_AFTER_S", 0.0)
    image = video_frames("astronaut_talk.mp4", limit=1)[0]
    with PerceptionProcess() as p:
        p.process.kill()
        p.process.join(5)
        try:
            p.process_video(CapturedFrame(image, 1, 0))
            raise AssertionError("a dead child must raise")
        except RuntimeError as e:
            assert "vision process died" in str(e)
        cues = p.process_video(CapturedFrame(image, 2, int(1e8)))   # restarted
        assert p.restarts == 1 and cues.seq == 2


def test_bad_frames_are_survived():
    image = video_frames("messi_sway.mp4", limit=1)[0]
    with PerceptionProcess() as p:
        cues = p.process_video(CapturedFrame(np.zeros((3,), np.float32), 7, 0))
        assert cues.seq == 7 and not cues.pose.present
        cues = p.process_video(CapturedFrame(image, 8, int(1e8)))     # the child is still fine
        assert cues.seq == 8 and p.restarts == 0 and p.process.is_alive()
