"""`liveavatar bench generator`: frames per second of any registered generator by batch size.

Conditionings vary every frame (walking bone angles, visemes, emotion mixes, actions), so a
generator cannot get by on caches of a still pose. Timing is wall-clock per `render` call, after
warm-up; the median and p95 per batch are reported, and fps per session = 1000 / ms per batch.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from liveavatar.bench import report
from liveavatar.types import ACTIONS, EMOTIONS, REST_BONE_ANGLES, VISEMES, Conditioning

WARMUP_FRAMES = 10


def sample_conditionings(n: int, frame: int, fps: float = 30.0) -> list[Conditioning]:
    """n sessions' conditionings for output frame `frame`: deterministic, all different."""
    out = []
    t = frame / fps
    for s in range(n):
        ph = t * 0.7 + s * 0.37
        c = Conditioning.neutral(seq=frame, t_tick_ns=int(t * 1e9))
        c.bone_angles = (REST_BONE_ANGLES + 0.6 * np.sin(ph + np.arange(len(REST_BONE_ANGLES)))).astype(np.float32)
        c.root = np.array([0.05 * np.sin(ph), 0.02 * np.cos(ph), 1.0], np.float32)
        c.head = np.array([0.3 * np.sin(ph), 0.2 * np.cos(ph), 0.1 * np.sin(2 * ph)], np.float32)
        c.face = np.clip(0.5 + 0.5 * np.sin(ph * 3 + np.arange(len(c.face))), 0, 1).astype(np.float32)
        vis = np.zeros(len(VISEMES), np.float32)
        vis[(frame + s) % len(VISEMES)] = 1.0
        c.visemes = vis
        emo = np.zeros(len(EMOTIONS), np.float32)
        emo[0], emo[1 + (frame // 15 + s) % (len(EMOTIONS) - 1)] = 0.4, 0.6
        c.emotion, c.emotion_intensity = emo, 0.6
        c.action = ACTIONS[1 + (frame // 60 + s) % (len(ACTIONS) - 1)]
        c.action_phase, c.action_weight = (frame % 60) / 60.0, 0.7
        c.body_present, c.speaking = 1.0, 0.5
        out.append(c)
    return out


def run(generator: str = "rig2d", device: str | None = None, batches: list[int] | None = None,
        size: int | None = None, frames: int = 120) -> dict:
    from liveavatar.generation import registry

    batches = batches or [1, 8]
    gen = registry.create(generator, device=device, size=size)
    names = gen.characters()
    character = "nova" if "nova" in names else (names[0] if names else "nova")
    gen.prepare_character(character)
    rows = []
    threads = torch.get_num_threads()
    for b in batches:
        rows += _measure(gen, character, b, frames, f"{threads} torch thread{'s' if threads > 1 else ''}")
    if generator in ("rig2d", "mesh", "auto") and gen.device == "cpu" and threads > 1:
        # On a loaded machine (perception, OBS, other jobs) one intra-op thread can beat two
        # busy-waiting ones: report the single-session case both ways.
        torch.set_num_threads(1)
        try:
            rows += _measure(gen, character, 1, frames, "1 torch thread")
        finally:
            torch.set_num_threads(threads)
    return report.result("generator", rows, generator=generator, info=gen.info())


def _measure(gen: Any, character: str, b: int, frames: int, label: str) -> list[dict]:
    chars = [character] * b
    for i in range(WARMUP_FRAMES):
        gen.render(sample_conditionings(b, i), chars)
    times_ms, cpu_ms = [], []
    for i in range(frames):
        conds = sample_conditionings(b, WARMUP_FRAMES + i)
        t0, c0 = time.perf_counter(), time.process_time()
        gen.render(conds, chars)
        times_ms.append((time.perf_counter() - t0) * 1e3)
        cpu_ms.append((time.process_time() - c0) * 1e3)
    st, cpu = report.stats(times_ms), report.stats(cpu_ms)
    tag = f"B={b}, {label}"
    note = f"{b} session(s), {gen.size}x{gen.size} RGBA, {gen.device}"
    return [report.row(f"ms per batch ({tag})", st["median"], st["p95"], "ms", note),
            report.row(f"CPU ms per batch ({tag})", cpu["median"], cpu["p95"], "ms",
                       "all threads of the process; less load-sensitive than wall time"),
            report.row(f"fps per session ({tag})", 1e3 / st["median"], 1e3 / st["p95"], "fps",
                       "p95 column: fps at the p95 batch time"),
            report.row(f"total fps ({tag})", b * 1e3 / st["median"], b * 1e3 / st["p95"], "fps", "")]
