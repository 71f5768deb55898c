"""`liveavatar bench workers`: the generator on Ray Serve replicas vs in-process.

Starts a local Ray cluster (one logical GPU per replica, so the deployment is placed as on a
GPU host), deploys rig2d behind `RayGenerator` and measures, after warm-up:
- per-frame cost in-process (rig2d, one torch thread, as the service renders on CPU) and through
  a Ray Serve round trip, one session and `sessions` sessions; the overhead is the difference;
- the round trip in parts, from the replica's time stamps (one monotonic clock on one host): the
  request's way to the replica, the @serve.batch wait, the hop to the render thread, the render,
  the reply's way back to the service's render thread; the empty call; pickling request and reply;
  and the same round trip as a Ray actor call whose frame comes back through the object store
  (Serve's default transport, which the service no longer uses);
- time to place a new session: its first request to its first frame on a warm deployment;
- sessions one replica can render at `fps` on this machine's CPU (from its batched render time).
The replicas share this machine's cores with the service, so on a small machine the round trip
includes their contention; on a cluster they run on their own nodes.
"""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np

from liveavatar.bench import report
from liveavatar.bench.generator import sample_conditionings

WARMUP = 10


def _time(fn: object, frames: int) -> list[float]:
    out = []
    for f in range(frames + WARMUP):
        t0 = time.perf_counter()
        fn(f)   # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1e3)
    return out[WARMUP:]


def run(size: int = 256, frames: int = 150, sessions: int = 4, placements: int = 10, fps: int = 30) -> dict:
    import ray
    import torch
    from ray import serve

    from liveavatar.generation.rig2d import Rig2DGenerator
    from liveavatar.interop.ray_workers import RayGenerator

    base_start = report.baseline_ms()
    torch.set_num_threads(1)
    local = Rig2DGenerator(device="cpu", size=size)
    local.load()
    local.prepare_character("nova")
    names = ["nova"] * sessions

    def local_one(f: int) -> None:
        local.render(sample_conditionings(1, f), ["nova"])

    def local_many(f: int) -> None:
        local.render(sample_conditionings(sessions, f), names)

    in_one = report.stats(_time(local_one, frames))
    in_many = report.stats(_time(local_many, frames))

    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), num_gpus=1, include_dashboard=False,
             log_to_driver=False)
    gen = RayGenerator(None, "rig2d", size=size, replicas=1, max_sessions=max(8, sessions), fps=fps,
                       stale_after_s=5.0)
    try:
        gen.load()
        gen.warmup()
        startup_s = time.perf_counter() - t0
        one = ["bench-one"]
        many = [f"bench-{i}" for i in range(sessions)]

        def ray_one(f: int) -> None:
            gen.render_sessions(one, sample_conditionings(1, f), ["nova"], wait_s=5.0)

        batches: list[int] = []

        def ray_many(f: int) -> None:
            gen.render_sessions(many, sample_conditionings(sessions, f), names, wait_s=5.0)
            batches.extend(lane.batch for s in many if (lane := gen.lane(s)) is not None and lane.batch)

        ping = report.stats(_time(lambda f: gen._call("ping").result(timeout=30), frames))
        parts: list[tuple[float, ...]] = []

        def ray_one_parts(f: int) -> None:
            ray_one(f)
            lane = gen.lane(one[0])
            if lane is not None and len(lane.timings) == 5:
                sent = lane.frame_at
                parts.append((sent, *lane.timings))

        rt_one = report.stats(_time(ray_one_parts, frames))
        parts = parts[WARMUP:]
        gen.by_reference = True
        ping_ref = report.stats(_time(lambda f: gen._call("ping").result(timeout=30), frames))
        rt_ref = report.stats(_time(ray_one, frames))
        gen.by_reference = False
        rt_many = report.stats(_time(ray_many, frames))
        placed = []
        for k in range(placements):
            sid = [f"new-{k}"]
            for f in range(200):
                gen.render_sessions(sid, sample_conditionings(1, f), ["nova"], wait_s=5.0)
                lane = gen.lane(sid[0])
                if lane is not None and lane.placed_ms is not None:
                    placed.append(lane.placed_ms)
                    break
            gen.forget_session(sid[0])
        info = gen.info()
    finally:
        gen.close()
        serve.shutdown()
        ray.shutdown()
    place = report.stats(placed)
    # (sent, arrived, batch began, render began, render ended, taken) -> the legs, ms
    legs = np.diff(np.asarray(parts or [(0.0,) * 6]), axis=1) * 1e3
    leg = [report.stats(list(legs[:, i])) for i in range(5)]
    added = report.stats(list(legs.sum(axis=1) - legs[:, 3]))   # the round trip less the frame's own render
    request = sample_conditionings(1, 0)[0]
    from liveavatar.interop.ray_workers import FrameReply, FrameRequest
    wire_req = FrameRequest.pack("s", "nova", request)
    wire_reply = FrameReply("s", 0, "r", 1, np.zeros((size, size, 4), np.uint8))

    def pickling(f: int) -> None:
        pickle.loads(pickle.dumps(wire_req, protocol=5))
        pickle.loads(pickle.dumps(wire_reply, protocol=5))

    pickled = report.stats(_time(pickling, frames))
    base_end = report.baseline_ms()
    period_ms = 1e3 / fps
    per_worker = int(sessions * period_ms // in_many["median"]) if in_many["median"] > 0 else 0
    rows = [
        report.row(f"in-process render, 1 session at {size} px", in_one["median"], in_one["p95"], "ms",
                   "rig2d nova, 1 torch thread"),
        report.row(f"Ray Serve round trip, 1 session at {size} px", rt_one["median"], rt_one["p95"], "ms",
                   "1 replica, render_sessions waiting for the reply"),
        report.row(f"Ray Serve overhead per frame at {size} px", added["median"], added["p95"], "ms",
                   "each frame's round trip - its render on the replica (goal < 5 ms)"),
        report.row(f"Ray Serve round trip - in-process render at {size} px", rt_one["median"] - in_one["median"],
                   None, "ms", "medians of runs minutes apart: the load between them shows too"),
        report.row("Ray Serve empty round trip", ping["median"], ping["p95"], "ms",
                   "a handle call returning a string: the per-call cost without a frame"),
        report.row("  part: request to the replica", leg[0]["median"], leg[0]["p95"], "ms",
                   "handle call, router, gRPC, unpickling, the replica's loop"),
        report.row("  part: @serve.batch wait", leg[1]["median"], leg[1]["p95"], "ms",
                   "at most batch_wait_s (5 ms); a batch holding its tick's requests starts at once"),
        report.row("  part: hop to the render thread", leg[2]["median"], leg[2]["p95"], "ms",
                   "asyncio.to_thread on the replica"),
        report.row("  part: render on the replica", leg[3]["median"], leg[3]["p95"], "ms", "rig2d, 1 torch thread"),
        report.row("  part: reply to the service", leg[4]["median"], leg[4]["p95"], "ms",
                   f"{size * size * 4 // 1024} KB frame inline over gRPC, to the service's render thread"),
        report.row("  part: pickle + unpickle request and reply", pickled["median"], pickled["p95"], "ms",
                   f"{len(pickle.dumps(wire_req))} + {len(pickle.dumps(wire_reply, protocol=5))} bytes, "
                   "in this process"),
        report.row(f"Ray actor call round trip, 1 session at {size} px", rt_ref["median"], rt_ref["p95"], "ms",
                   "Serve's default transport: the frame through the object store (not used)"),
        report.row("Ray actor call empty round trip", ping_ref["median"], ping_ref["p95"], "ms",
                   "Serve's default transport (not used)"),
        report.row(f"in-process render, {sessions} sessions at {size} px", in_many["median"], in_many["p95"],
                   "ms", "one batched call"),
        report.row(f"Ray Serve round trip, {sessions} sessions at {size} px", rt_many["median"], rt_many["p95"],
                   "ms", "one @serve.batch call on the replica"),
        report.row(f"Ray Serve overhead per tick, {sessions} sessions", rt_many["median"] - in_many["median"],
                   None, "ms", "round trip - in-process, medians"),
        report.row(f"sessions per generator call on the replica, {sessions}-session ticks",
                   float(np.median(batches or [0])), float(np.min(batches or [0])), "sessions",
                   "median (p95 column: the fewest): below the tick's count, a tick split into two calls"),
        report.row("place a new session", place["median"], place["p95"], "ms",
                   f"first request -> first frame, warm deployment, n={place['n']}"),
        report.row(f"sessions per CPU replica at {fps} fps, {size} px", float(per_worker), None, "sessions",
                   f"{sessions} x {period_ms:.1f} ms / batched render ms, this machine's CPU"),
        report.row("cluster start + deploy + warm-up", startup_s, None, "s", "ray.init, serve.run, idle clip"),
        report.row("baseline workload (start / end)", base_start, base_end, "ms",
                   "report.baseline_ms(): read figures as ratios"),
    ]
    return report.result("workers", rows, stats={k: info[k] for k in ("sent", "replies", "conflated",
                                                                      "stale_dropped", "idle_frames")},
                         loadavg=os.getloadavg())
