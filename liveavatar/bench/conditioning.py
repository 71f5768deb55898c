"""`liveavatar bench conditioning`: CPU cost of the conditioner per output tick, with perception
results arriving at 30 fps (a moving, talking, expressive person, keywords now and then)."""
from __future__ import annotations

import time

import numpy as np

from liveavatar.bench import report
from liveavatar.clock import VirtualClock
from liveavatar.types import FACE_FEATURES, FF, Cues, KeywordHit, Part, VoiceFeatures

WARMUP = 100


def _moving_person(t: float, base: np.ndarray) -> np.ndarray:
    """A standing person (33x4) whose arms swing and body sways."""
    lm = base.copy()
    lm[:, 0] += 0.02 * np.sin(2 * np.pi * 0.3 * t)
    lm[[13, 15, 17, 19, 21], 0] += 0.05 * np.sin(2 * np.pi * 1.1 * t)
    lm[[14, 16, 18, 20, 22], 1] -= 0.08 * (1 + np.sin(2 * np.pi * 0.7 * t))
    lm[:, :2] += np.random.default_rng(int(t * 1000)).normal(0, 0.002, (33, 2))  # tracker jitter
    return lm.astype(np.float32)


def _base_person() -> np.ndarray:
    lm = np.zeros((33, 4), np.float32)
    lm[:, 3] = 1.0
    pts = {0: (0.5, 0.25), 7: (0.53, 0.24), 8: (0.47, 0.24), 11: (0.58, 0.4), 12: (0.42, 0.4),
           13: (0.6, 0.55), 14: (0.4, 0.55), 15: (0.61, 0.68), 16: (0.39, 0.68),
           23: (0.55, 0.72), 24: (0.45, 0.72), 25: (0.55, 0.86), 26: (0.45, 0.86),
           27: (0.55, 0.98), 28: (0.45, 0.98)}
    for i in range(33):
        lm[i, :2] = pts.get(i, (0.5, 0.3))
    return lm


def _cues(i: int, t_ns: int, base: np.ndarray) -> Cues:
    t = t_ns / 1e9
    expr = np.zeros(len(FACE_FEATURES), np.float32)
    expr[FF["head_yaw"]] = 0.3 * np.sin(t)
    expr[FF["smile"]] = 0.5 + 0.4 * np.sin(0.5 * t)
    expr[FF["mouth_open"]] = 0.3 + 0.3 * np.sin(7 * t)
    vis = np.abs(np.sin(np.arange(6) + 5 * t)).astype(np.float32)
    voice = VoiceFeatures(speaking_prob=0.9, loudness_dbfs=-20 + 5 * np.sin(3 * t), pitch_hz=180,
                          pitch_dev=float(np.sin(t)), visemes=vis / vis.sum(), present=True)
    words = (KeywordHit("dance", t_ns, 0.9),) if i % 300 == 150 else ()
    return Cues(seq=i, t_capture_ns=t_ns, pose=Part(_moving_person(t, base), True, 0.95),
                face=Part.empty(478), hand_left=Part.empty(21), hand_right=Part.empty(21),
                expression=expr, expression_present=True, voice=voice, keywords=words,
                image_size=(640, 480))


def run(ticks: int = 3000) -> dict:
    from liveavatar.conditioning import Conditioner
    clock = VirtualClock(int(10e9))
    cond = Conditioner(rate_hz=30.0, clock=clock)
    base = _base_person()
    period = int(1e9 / 30)
    n = ticks + WARMUP
    cues = [_cues(i, int(10e9) + i * period, base) for i in range(n)]   # built outside the timing
    push_us, tick_us = [], []
    for i in range(n):
        t_ns = int(10e9) + i * period
        clock.sleep_until(t_ns + 20_000_000)        # results arrive ~20 ms after capture
        t0 = time.perf_counter()
        cond.push_cues(cues[i])
        t1 = time.perf_counter()
        cond.tick(clock.now_ns())
        t2 = time.perf_counter()
        push_us.append((t1 - t0) * 1e6)
        tick_us.append((t2 - t1) * 1e6)
    both = np.add(push_us, tick_us)
    rows = []
    for name, samples, note in (("tick", tick_us, "one Conditioning (emotion, actions, idle, blend)"),
                                ("push_cues", push_us, "retarget + gestures + keywords, 30 fps input"),
                                ("per frame", both, "push_cues + tick")):
        s = report.stats(samples, warmup=WARMUP)
        rows.append(report.row(name, s["median"], s["p95"], "us", note))
    return report.result("conditioning", rows, ticks=ticks)
