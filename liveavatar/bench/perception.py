"""`liveavatar bench perception`: pose + face + hands at 640x480 on real clips played at 30 fps
through the real worker (latest-wins slots), with the microphone track fed in real time; then the
voice analysis alone over real speech for its CPU cost per second of audio."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from liveavatar.bench import report

FPS = 30
WARMUP_S = 2.0


def _media() -> Any:
    """640x480 RGB frames and mono audio of the test clips (gathered by tests/media/fetch.py)."""
    import sys
    from pathlib import Path

    import av

    from liveavatar.errors import UserError
    try:
        from tests.media import path
    except ImportError:        # run as the `liveavatar` script: the repo root is not on sys.path
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.media import path
    frames, audio, rate = [], [], 48000
    try:
        path("astronaut_talk.mp4"), path("messi_sway.mp4")
    except FileNotFoundError as e:
        raise UserError(f"{e} (benchmark media)") from None
    for name in ("astronaut_talk.mp4", "messi_sway.mp4"):
        with av.open(str(path(name))) as c:
            for f in c.decode(video=0):
                frames.append(f.to_ndarray(format="rgb24"))
        with av.open(str(path(name))) as c:
            if c.streams.audio:
                for f in c.decode(audio=0):
                    a = f.to_ndarray()
                    audio.append(a.mean(axis=0) if a.ndim == 2 else a)
                    rate = f.sample_rate
    return frames, np.concatenate(audio).astype(np.float32), rate


class _TimedSlot:
    """A cues slot that records when each Cues came out (for capture-to-cues latency)."""

    def __init__(self, clock_ns: Any, perception: Any) -> None:
        from liveavatar.runtime import LatestSlot
        self.slot: LatestSlot[Any] = LatestSlot()
        self.latency_ms: list[float] = []
        self.pose_behind: list[float] = []     # frames between this Cues and the pose it carries
        self._now = clock_ns
        self._p = perception

    def put(self, cues: Any) -> None:
        self.latency_ms.append((self._now() - cues.t_capture_ns) / 1e6)
        self.pose_behind.append(float(self._p._n - self._p._pose_used_n))
        self.slot.put(cues)


def run(seconds: float = 20.0) -> dict:
    from liveavatar.clock import CLOCK
    from liveavatar.perception import Perception, PerceptionWorker
    from liveavatar.perception.voice import VoiceAnalyzer
    from liveavatar.runtime import LatestSlot
    from liveavatar.types import AudioChunk, CapturedFrame

    frames, audio, rate = _media()
    load_start = os.getloadavg()[0]
    perception = Perception(static=False, keywords=("dance", "wave", "happy"))
    perception.warmup()
    frames_in: LatestSlot = LatestSlot()
    cues_out = _TimedSlot(CLOCK.now_ns, perception)
    worker = PerceptionWorker(perception, frames_in, cues_out).start()  # type: ignore[arg-type]

    stop = threading.Event()
    chunk = rate // 50                                 # 20 ms, like WebRTC audio frames

    def mic() -> None:
        i, t_next = 0, time.perf_counter()
        while not stop.is_set():
            a = audio[i:i + chunk]
            if a.size < chunk:
                i, a = 0, audio[:chunk]
            perception.process_audio(AudioChunk(a, rate, i, CLOCK.now_ns()))
            i += chunk
            t_next += 0.02
            time.sleep(max(0.0, t_next - time.perf_counter()))

    mic_thread = threading.Thread(target=mic, daemon=True)
    mic_thread.start()

    total = WARMUP_S + seconds
    n_offered = 0
    t0 = time.perf_counter()
    marks = {}
    while True:
        now = time.perf_counter() - t0
        if now >= total:
            break
        if "warm" not in marks and now >= WARMUP_S:
            marks["warm"] = (worker.processed, len(cues_out.latency_ms), worker.dropped,
                             perception.pose_updates, perception.hands_updates, perception.hands_gated,
                             time.perf_counter(), time.process_time())
        frames_in.put(CapturedFrame(frames[n_offered % len(frames)], n_offered, CLOCK.now_ns()))
        n_offered += 1
        time.sleep(max(0.0, t0 + n_offered / FPS - time.perf_counter()))
    t_end, cpu_end = time.perf_counter(), time.process_time()
    stop.set()
    mic_thread.join()
    worker.stop()
    stats = perception.stats()
    p0, l0, d0, pu0, hu0, hg0, tw, cpu0 = marks["warm"]
    span = t_end - tw
    processed = worker.processed - p0
    lat = cues_out.latency_ms[l0:]
    behind = report.stats(cues_out.pose_behind[l0:])
    timer = perception.timer.summary(skip=int(WARMUP_S * FPS))
    perception.close()

    # Voice alone, as fast as it goes, over the real speech: CPU per second of audio.
    va = VoiceAnalyzer(keywords=("dance", "wave", "happy"))
    va.feed(audio[:rate], rate, 1)                    # warm-up, not counted
    va.process_s = va.audio_s = 0.0
    for _ in range(3):
        for i in range(0, audio.size - chunk, chunk):
            va.feed(audio[i:i + chunk], rate, 1)
    voice_alone = va.cpu_fraction()

    lat_s = report.stats(lat)
    rows = [
        report.row("frames processed", processed / span, None, "fps",
                   f"offered {FPS} fps; {worker.dropped - d0} frames replaced before processing"),
        report.row("CPU used", (cpu_end - cpu0) / span, None, "cores",
                   f"{1e3 * (cpu_end - cpu0) / max(processed, 1):.1f} CPU-ms per processed frame, all threads"),
        report.row("capture -> cues latency", lat_s["median"], lat_s["p95"], "ms",
                   "frame put to Cues out, incl. waiting in the slot"),
        report.row("pose results", (perception.pose_updates - pu0) / span, None, "per s",
                   "pose runs concurrently at the rate that keeps up"),
        report.row("pose age", behind["median"], behind["p95"], "frames",
                   "how many frames older the carried pose is (0: this frame's)"),
        report.row("hands results", (perception.hands_updates - hu0) / span, None, "per s",
                   f"hands skipped on {perception.hands_gated - hg0} frames "
                   "(wrists out of view, or no hand: searched every 3rd frame)"),
    ]
    for name in ("frame", "face", "pose", "hands", "voice"):
        if name in timer:
            rows.append(report.row(f"{name} ms", timer[name]["median_ms"], timer[name]["p95_ms"], "ms",
                                   "process_video total" if name == "frame" else
                                   ("per 20 ms audio chunk" if name == "voice" else "model call")))
    rows.append(report.row("voice CPU, live beside vision", 100 * stats.get("voice_cpu_fraction", 0.0), None,
                           "% of one core", "voice-thread CPU time / audio time"))
    rows.append(report.row("voice CPU, alone", 100 * voice_alone, None, "% of one core",
                           "VAD + loudness + pitch + visemes + 3 keywords"))
    return report.result("perception", rows, seconds=seconds, load_avg_start=load_start,
                         load_avg_end=os.getloadavg()[0], stats=stats)
