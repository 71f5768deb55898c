"""`liveavatar bench actions`: importing a 30 s BVH file (parse, forward kinematics, retarget,
resample, validate) and what a playing imported action adds to a conditioning tick."""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from liveavatar.bench import report
from liveavatar.bench.conditioning import WARMUP, _base_person, _cues
from liveavatar.clock import VirtualClock
from liveavatar.types import ControlEvent, ControlKind, TriggerMode

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "media" / "bvh" / "wave_hello.bvh"


def _thirty_seconds(folder: Path) -> tuple[Path, str]:
    """A 30 s, 120 fps BVH: the real wave_hello capture (Mixamo-style skeleton, 28 joints) looped
    when the shared media is there, else a synthetic clip on our own exported skeleton."""
    from liveavatar.conditioning import bvh
    out = folder / "thirty.bvh"
    if REAL.is_file():
        text = REAL.read_text()
        head, _, motion = text.partition("MOTION")
        rows = [r for r in motion.splitlines()[3:] if r.strip()]
        n = 30 * 120
        rows = [rows[i % len(rows)] for i in range(n)]
        out.write_text(f"{head}MOTION\nFrames: {n}\nFrame Time: {1 / 120:.7f}\n" + "\n".join(rows) + "\n")
        return out, "wave_hello looped to 30 s at 120 fps (84 channels)"
    t = np.arange(30 * 120) / 120
    bones = np.tile(np.array([np.pi, np.pi, 0.3, 0.1, -0.3, -0.1, 0.05, 0, -0.05, 0], np.float32), (len(t), 1))
    bones[:, 2] += np.sin(2 * np.pi * t)
    root = np.tile(np.array([0, 0, 1], np.float32), (len(t), 1))
    out.write_text(bvh.export_bvh(bones, root, 120.0))
    return out, "synthetic 30 s at 120 fps (our exported skeleton)"


def run(imports: int = 7, ticks: int = 3000) -> dict:
    from liveavatar.conditioning import Conditioner, load_mapping
    from liveavatar.conditioning import action_files as af
    base_ms = report.baseline_ms()
    rows = []
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-") as tmp:
        folder = Path(tmp)
        src, what = _thirty_seconds(folder)
        times = []
        for i in range(imports + 1):
            t0 = time.perf_counter()
            act = af.import_bvh(src, f"bench-{i}", end_s=29.9)
            af.save_action(act, folder / "actions", replace=True)
            times.append((time.perf_counter() - t0) * 1e3)
        s = report.stats(times, warmup=1)
        rows.append(report.row("import 30 s BVH", s["median"], s["p95"], "ms", f"{what}; parse + retarget + save"))

        lib = af.ActionLibrary(folder / "actions")
        mapping = load_mapping(actions=lib.names())
        clocks = [VirtualClock(int(10e9)), VirtualClock(int(10e9))]
        plain = Conditioner(mapping, rate_hz=30.0, clock=clocks[0], actions=af.ActionLibrary(folder / "none"))
        playing = Conditioner(mapping, rate_hz=30.0, clock=clocks[1], actions=lib)
        playing.push_event(ControlEvent(ControlKind.ACTION, "bench-0", mode=TriggerMode.TOGGLE))
        base = _base_person()
        period = int(1e9 / 30)
        n = ticks + WARMUP
        # the conditioning bench's moving, talking person, minus its "dance" keywords (a voice
        # trigger would replace the imported action)
        cues = [dataclasses.replace(_cues(i, int(10e9) + i * period, base), keywords=()) for i in range(n)]
        us: dict[str, list[float]] = {"plain": [], "playing": []}
        for i in range(n):
            t_ns = int(10e9) + i * period
            for key, cond, clock in (("plain", plain, clocks[0]), ("playing", playing, clocks[1])):
                clock.sleep_until(t_ns + 20_000_000)
                cond.push_cues(cues[i])
                t0 = time.perf_counter()
                c = cond.tick(clock.now_ns())
                us[key].append((time.perf_counter() - t0) * 1e6)
            if i >= WARMUP and c.action != "bench-0":
                raise RuntimeError("the imported action stopped playing")
        sp, sa = report.stats(us["plain"], warmup=WARMUP), report.stats(us["playing"], warmup=WARMUP)
        rows.append(report.row("tick, no action", sp["median"], sp["p95"], "us", "conditioning tick, live input"))
        rows.append(report.row("tick, imported action playing", sa["median"], sa["p95"], "us",
                               "same input, a looping imported action blended over it"))
        diff = np.asarray(us["playing"][WARMUP:]) - np.asarray(us["plain"][WARMUP:])
        rows.append(report.row("added by the action", float(np.median(diff)), float(np.percentile(diff, 95)), "us",
                               "per tick, paired difference (goal <= 100 us)"))
        # The blend alone (sample the clip, mask, ease), free of the rest of the tick's noise.
        buf = playing._out.copy()
        blend = []
        for _ in range(ticks + WARMUP):
            t0 = time.perf_counter()
            playing._play_clip(buf)
            blend.append((time.perf_counter() - t0) * 1e6)
        sb = report.stats(blend, warmup=WARMUP)
        rows.append(report.row("action blend alone", sb["median"], sb["p95"], "us",
                               "sample + mask + ease inside the tick (goal <= 100 us)"))
    rows.append(report.row("baseline workload", base_ms, None, "ms", "report.baseline_ms(): read figures as ratios"))
    return report.result("actions", rows, imports=imports, ticks=ticks)
