"""Generator workers on Ray Serve (liveavatar/interop/ray_workers.py) on a real local Ray cluster:
two replicas, each holding one logical GPU (`ray.init(num_gpus=2)` declares them, so placement is
tested without a GPU). One cluster for the whole module: Ray takes ~1 min to start on 2 cores."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from liveavatar.bench.generator import sample_conditionings
from liveavatar.errors import UserError
from liveavatar.interop.ray_workers import IDLE_FRAMES, IDLE_PERIOD_S, FrameRequest, RayGenerator, parse_workers
from liveavatar.runtime import TrackingGovernor
from liveavatar.types import Conditioning
from tests.server.conftest import free_port
from tests.server.test_cli import serve

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64
FPS = 30
SESSIONS = [f"s{i}" for i in range(8)]


@pytest.fixture(scope="module")
def workers() -> RayGenerator:
    import ray
    from ray import serve as ray_serve

    # The replicas (processes the local raylet starts) import liveavatar from this checkout.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    gen = RayGenerator(None, "rig2d", size=SIZE, replicas=2, max_sessions=8, fps=FPS, cpus_per_replica=0.5,
                       stale_after_s=2.0,    # replicas on 2 busy cores can take a while per batch
                       batch_wait_s=0.1)     # and a tick's requests can reach them >5 ms apart there
    try:
        gen.load()
        gen.warmup()
        yield gen
    finally:
        gen.close()
        ray_serve.shutdown()
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def tick(gen: RayGenerator, sessions: list[str], frame: int, wait_s: float | None = None) -> np.ndarray:
    out = gen.render_sessions(sessions, sample_conditionings(len(sessions), frame), ["nova"] * len(sessions),
                              wait_s=wait_s)
    time.sleep(1 / FPS)
    return out


def run_until(gen: RayGenerator, sessions: list[str], done: object, timeout_s: float = 90.0) -> list[np.ndarray]:
    """Ticks like the engine's render loop until `done()`; the frames shown, tick by tick."""
    shown = []
    t_end = time.monotonic() + timeout_s
    frame = 0
    while not done():   # type: ignore[operator]
        assert time.monotonic() < t_end, f"not done after {timeout_s} s: {gen.info()}"
        shown.append(tick(gen, sessions, frame))
        frame += 1
    return shown


def placement(gen: RayGenerator, sessions: list[str]) -> dict[str, str]:
    return {sid: lane.replica for sid in sessions if (lane := gen.lane(sid)) is not None and lane.replica}


def fresh(gen: RayGenerator, sid: str) -> bool:
    lane = gen.lane(sid)
    return lane is not None and lane.frame is not None and time.monotonic() - lane.frame_at < gen.stale_after_s


# -- option parsing (no cluster) ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "ray://", "ray://host", "http://host:10001", "auto\nray://x:1", "local"])
def test_bad_workers_values_are_one_line_errors(value: str) -> None:
    with pytest.raises(UserError) as e:
        parse_workers(value)
    assert "\n" not in str(e.value) and "ray://HOST:PORT" in str(e.value)


def test_good_workers_values_pass() -> None:
    for value in ("auto", "ray://10.0.0.5:10001", "ray://head.cluster.local:10001"):
        assert parse_workers(value) == value


def test_serve_with_bad_workers_exits_2_with_one_line() -> None:
    r = serve("--workers", "gpu-farm", "--port", str(free_port()))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-500:]
    assert "--workers" in r.stderr and "Traceback" not in r.stderr


def test_conditioning_survives_the_wire_bit_exact() -> None:
    for c in sample_conditionings(3, 17):
        back = FrameRequest.pack("s", "nova", c).conditioning()
        for name in ("bone_angles", "root", "head", "face", "visemes", "emotion"):
            assert np.array_equal(getattr(back, name), getattr(c, name)), name
        for name in ("seq", "t_tick_ns", "t_capture_ns", "emotion_intensity", "action", "action_phase",
                     "action_weight", "speaking", "body_present"):
            assert getattr(back, name) == getattr(c, name), name


_SERVER_TRACE = ("Initialization failure from server: Traceback (most recent call last):\n  File \"proxier.py\", "
                 "line 772, in Datapath\n" + "    frame\n" * 40 + "RuntimeError: Starting Ray client server failed.")


def test_joining_a_cluster_tries_again_when_its_client_server_fails_to_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    calls: list[str | None] = []

    def init(address: str | None = None, **_: object) -> None:
        calls.append(address)
        if len(calls) < 3:
            raise ConnectionError(_SERVER_TRACE)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    RayGenerator("ray://h:1")._join("ray://h:1", None)
    assert calls == ["ray://h:1"] * 3


def test_a_cluster_that_cannot_be_joined_is_one_line_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def init(**_: object) -> None:
        raise ConnectionError(_SERVER_TRACE)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(time, "sleep", lambda _s: None)
    with pytest.raises(UserError) as e:
        RayGenerator("ray://h:1")._join("ray://h:1", None)
    message = str(e.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith("--workers ray://h:1: cannot join the Ray cluster")
    assert message.endswith("Starting Ray client server failed.")     # the server's last words, kept


# -- on the cluster -----------------------------------------------------------------------------

@pytest.mark.slow
def test_two_replicas_share_eight_sessions(workers: RayGenerator) -> None:
    batches: list[int] = []

    def done() -> bool:
        batches.extend(lane.batch for s in SESSIONS if (lane := workers.lane(s)) is not None)
        return all(fresh(workers, s) for s in SESSIONS) and max(batches) > 1

    # each replica renders its sessions together: @serve.batch put several in one generator call
    # (run_until fails if that never happens)
    shown = run_until(workers, SESSIONS, done)
    where = placement(workers, SESSIONS)
    assert sorted(Counter(where.values()).values()) == [4, 4], where
    # a session's row is its own newest frame, and the sessions' poses differ
    last = shown[-1]
    for i, sid in enumerate(SESSIONS):
        assert np.array_equal(last[i], workers.lane(sid).frame)  # type: ignore[union-attr]
    assert len({last[i].tobytes() for i in range(len(SESSIONS))}) == len(SESSIONS)
    # sticky: more ticks keep every session where it was
    for f in range(10):
        tick(workers, SESSIONS, 100 + f)
    assert placement(workers, SESSIONS) == where


@pytest.mark.slow
def test_more_replicas_than_the_cluster_holds_is_a_one_line_error(workers: RayGenerator) -> None:
    with pytest.raises(UserError) as e:
        RayGenerator(None, "rig2d", size=SIZE, replicas=3).load()   # the cluster has 2 (logical) GPUs
    assert "\n" not in str(e.value) and "--worker-replicas 3" in str(e.value) and "2 GPUs" in str(e.value)


@pytest.mark.slow
def test_frames_are_the_same_as_in_process(workers: RayGenerator) -> None:
    import torch

    from liveavatar.generation.rig2d import Rig2DGenerator

    torch.set_num_threads(1)
    local = Rig2DGenerator(device="cpu", size=SIZE)
    local.load()
    local.prepare_character("nova")
    conds = sample_conditionings(8, 42)
    # one session alone: the same batch of one on both sides, bit-exact
    for c in conds[:3]:
        assert np.array_equal(workers.render([c], ["nova"]), local.render([c], ["nova"]))
    # eight sessions split over two replicas vs one in-process batch of eight: rig2d's own
    # rasteriser rounds a few edge pixels differently by batch size (in-process too), by 1 level
    remote = workers.render(conds, ["nova"] * 8)
    here = local.render(conds, ["nova"] * 8)
    diff = np.abs(remote.astype(np.int16) - here.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    # the idle clip is the character with nobody tracked
    idle = workers._idle["nova"]
    assert idle.shape == (IDLE_FRAMES, SIZE, SIZE, 4)
    ticks = [int(i * IDLE_PERIOD_S / IDLE_FRAMES * 1e9) for i in range(IDLE_FRAMES)]
    still = [Conditioning.neutral(t_tick_ns=t) for t in ticks]
    assert np.array_equal(idle, local.render(still, ["nova"] * IDLE_FRAMES))


@pytest.mark.slow
def test_latest_wins_one_request_in_flight_per_session(workers: RayGenerator) -> None:
    sessions = ["lw0", "lw1", "lw2"]
    run_until(workers, sessions, lambda: all(fresh(workers, s) for s in sessions))
    before = (workers.stats.sent, workers.stats.conflated)
    ticks = 20
    for f in range(ticks):   # faster than any replica answers: ticks that find a request in flight send nothing
        workers.render_sessions(sessions, sample_conditionings(3, f), ["nova"] * 3, wait_s=0.0)
        for sid in sessions:
            assert workers.lane(sid).future is not None  # type: ignore[union-attr]
    sent, conflated = workers.stats.sent - before[0], workers.stats.conflated - before[1]
    assert sent + conflated == ticks * len(sessions)
    assert sent < ticks * len(sessions) and conflated > 0
    # replies older than stale_after_s are dropped and counted; the session idles meanwhile
    dropped, idle = workers.stats.stale_dropped, workers.stats.idle_frames
    workers.stale_after_s = 0.0
    try:
        shown = [tick(workers, sessions, f, wait_s=0.2) for f in range(10)]
    finally:
        workers.stale_after_s = 2.0
    assert workers.stats.stale_dropped > dropped and workers.stats.idle_frames > idle
    clip = {f.tobytes() for f in workers._idle["nova"]}
    assert all(frames[0].tobytes() in clip for frames in shown)
    for sid in sessions:
        workers.forget_session(sid)


@pytest.mark.slow
def test_a_killed_replicas_sessions_continue_on_the_other(workers: RayGenerator) -> None:
    import ray

    run_until(workers, SESSIONS, lambda: all(fresh(workers, s) for s in SESSIONS))
    where = placement(workers, SESSIONS)
    victim = sorted(set(where.values()))[0]
    moved = [s for s, r in where.items() if r == victim]
    stayed = [s for s, r in where.items() if r != victim]
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and a["name"].endswith("#" + victim)]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)

    def recovered() -> bool:
        return all(fresh(workers, s) and workers.lane(s).replica != victim  # type: ignore[union-attr]
                   for s in moved)

    shown = run_until(workers, SESSIONS, recovered)
    now = placement(workers, SESSIONS)
    assert all(now[s] != victim for s in moved) and all(now[s] == where[s] for s in stayed), (where, now)
    # meanwhile every session showed a picture of the avatar each tick (its last frame while that
    # was fresh, else the idle clip: test_latest_wins shows that) and none stood still
    for i in range(len(SESSIONS)):
        assert all(frames[i][..., 3].any() for frames in shown)
    i = SESSIONS.index(moved[0])
    assert len({frames[i].tobytes() for frames in shown}) > 1
    j = SESSIONS.index(stayed[0])
    assert len({frames[j].tobytes() for frames in shown}) > 1


class _Session:
    """What the render loop reads of a session: its conditioning tick and where frames go."""

    def __init__(self, sid: str) -> None:
        self.sid, self.character, self.lock = sid, "nova", threading.Lock()
        self.conditioner = None
        self.frames: list[np.ndarray] = []
        self.n = 0

    def tick(self, t_ns: int) -> tuple[Conditioning, int]:
        self.n += 1
        return sample_conditionings(1, self.n)[0], 0

    def publish(self, rgba: np.ndarray, cond: Conditioning, events: int, t_rendered: int) -> None:
        self.frames.append(rgba.copy())


@pytest.mark.slow
def test_the_engines_render_loop_idles_through_a_lost_replica(workers: RayGenerator) -> None:
    """The service's own RenderLoop over the workers: a replica killed under it, every tick still
    publishes a frame for every session, and the moved sessions' frames keep changing."""
    import ray

    from liveavatar.interop.ray_router import SESSION_TTL_S
    from liveavatar.runtime import StageTimer
    from liveavatar.server.render_loop import RenderLoop

    time.sleep(SESSION_TTL_S + 0.5)     # the earlier tests' sessions no longer count as load
    sessions = [_Session(f"e{i}") for i in range(8)]
    sids = [s.sid for s in sessions]
    engine = SimpleNamespace(cfg=SimpleNamespace(fps=FPS), generator=workers, governor=TrackingGovernor(FPS),
                             live=tuple(sessions),
                             timer=StageTimer())
    loop = RenderLoop(engine)   # type: ignore[arg-type]
    loop.start()
    try:
        # both replicas up (the one killed earlier was replaced by Serve) and sharing the sessions
        t_end = time.monotonic() + 180
        while not (all(fresh(workers, s) for s in sids) and len(set(placement(workers, sids).values())) == 2):
            assert time.monotonic() < t_end, (placement(workers, sids), [fresh(workers, s) for s in sids],
                                              loop.errors, loop.error, workers.worker_counters())
            time.sleep(0.2)
        where = placement(workers, sids)
        victim = sorted(set(where.values()))[0]
        moved = [s for s in sessions if where[s.sid] == victim]
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("SERVE_REPLICA::") and a["name"].endswith("#" + victim)]
        mark = {s.sid: len(s.frames) for s in sessions}
        ticks_before = loop.frames
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        t_end = time.monotonic() + 120
        while not all(fresh(workers, s.sid) and workers.lane(s.sid).replica != victim  # type: ignore[union-attr]
                      for s in moved):
            assert time.monotonic() < t_end, workers.info()
            time.sleep(0.2)
    finally:
        loop.stop(5.0)
    ticks = loop.frames - ticks_before
    assert loop.errors == 0, loop.error
    for s in sessions:   # no tick went without a frame for any session
        assert len(s.frames) - mark[s.sid] >= ticks, s.sid
    after = moved[0].frames[mark[moved[0].sid]:]
    assert all(f[..., 3].any() for f in after), "a tick showed no avatar"
    assert len({f.tobytes() for f in after}) > 1, "the moved session froze on one frame"


def test_the_router_places_sessions_by_load_and_keeps_them() -> None:
    """SessionRouter's choice on its own (replicas as plain objects with an id)."""
    import asyncio

    from liveavatar.interop.ray_router import SessionRouter

    router = SessionRouter.__new__(SessionRouter)   # Serve's constructor wants a live deployment
    router.initialize_state()
    a, b, c = (SimpleNamespace(replica_id=SimpleNamespace(unique_id=n)) for n in "abc")
    cond = Conditioning.neutral()

    def choose(replicas: list, sid: str, move_from: str = "") -> str:
        req = SimpleNamespace(args=[FrameRequest.pack(sid, "nova", cond, move_from)])
        ranked = asyncio.run(router.choose_replicas(replicas, req))  # type: ignore[arg-type]
        return ranked[0][0].replica_id.unique_id

    first = {sid: choose([a, b], sid) for sid in SESSIONS}
    assert sorted(Counter(first.values()).values()) == [4, 4]
    assert all(choose([a, b], sid) == r for sid, r in first.items())          # sticky
    on_a = [s for s, r in first.items() if r == "a"]
    assert choose([a, b], on_a[0], move_from="a") == "b"                       # failed there: moved
    assert all(choose([b, c], s) in ("b", "c") for s in on_a[1:])              # a gone: re-placed
    assert choose([b, c], "new") == "c"                                        # c has the fewest
