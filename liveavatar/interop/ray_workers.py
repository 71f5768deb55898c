"""Generator workers on Ray Serve: `serve --workers auto|ray://ADDRESS`.

The generator runs as a Ray Serve deployment, one replica per GPU (`num_gpus=1`; none on a
cluster without GPUs). Each session sends one request per frame; a replica gathers the requests
that reach it within a couple of milliseconds into one generator call with `@serve.batch`.
`SessionRouter` (a Ray Serve request router) keeps every session on one replica and places a
new session, or one whose replica was lost, on the replica with the fewest sessions.

Perception and conditioning stay in the service beside the session: a conditioning is ~640 bytes
a frame, the camera's frames are ~1 MB raw (or a VP8 stream that would have to be decoded on the
worker), and perception's output feeds control events and VMC out on the service's own side, so
sending the small thing keeps both latency and cluster bandwidth low.

`RayGenerator` satisfies the Generator protocol, so the engine drives it as any generator; its
`render_sessions` is the live path and is latest-wins per session:
- at most one request in flight per session; a tick whose session is still waiting sends
  nothing (counted `conflated`): the next request carries the newest conditioning;
- a tick waits for replies up to most of one frame period, then moves on; a reply that comes
  later still shows (the newest rendered frame) unless it is older than `stale_after_s` or was
  superseded, then it is dropped and counted (`stale_dropped`);
- a session without a fresh frame (its replica is lost, hung, or still placing it) shows its
  character's idle clip, rendered on a replica when the character was prepared, so the avatar
  keeps breathing and never freezes; a failed request is re-sent away from its replica.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.errors import UserError
from liveavatar.types import Conditioning

log = logging.getLogger("liveavatar.workers")

APP_NAME = "liveavatar-generator"
#: Frames of a character's idle clip: one breathing cycle of rig2d's idle motion (3.6 s).
IDLE_FRAMES = 24
IDLE_PERIOD_S = 3.6

#: Our methods are async (the render runs in a thread of its own), so they need no user-code thread
#: beside the replica's loop: one thread hop less each way (bench workers: ~1 ms a round trip).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
#: The service's calls go to the replicas over Serve's gRPC transport, the frame inline in the reply,
#: instead of a Ray actor call whose 256 KB reply goes through the object store (bench workers: the
#: round trip's overhead fell from ~18 to ~5 ms); plain pickle, as every type sent is ours or numpy.
#: Only the per-frame calls: a gRPC reply holds at most 4 MiB (Serve's client channel), which an idle
#: clip (24 frames) passes, and a frame of 1024 px or more too; those go as actor calls.
FAST_CALLS = {"_by_reference": False, "request_serialization": "pickle", "response_serialization": "pickle"}
FAST_METHODS = ("render", "ping")
GRPC_REPLY_MAX = 4 * 1024 * 1024 - 64 * 1024

_ADDRESS = re.compile(r"^ray://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def parse_workers(value: str) -> str:
    """`auto` (start or join a local cluster) or `ray://HOST:PORT` (a Ray Client server). Anything
    else: a one-line UserError."""
    if value == "auto" or _ADDRESS.match(value):
        return value
    shown = " ".join(repr(value).split())[:80]
    raise UserError(f"--workers {shown}: use auto (a local Ray cluster) or ray://HOST:PORT "
                    "(a Ray cluster's client port, usually 10001)")


def _last_words(cause: str, limit: int = 240) -> str:
    """A Ray error cut to one readable line: its end when it carries a server's traceback."""
    if len(cause) <= limit:
        return cause
    return "..." + cause[-limit:] if "Traceback" in cause else cause[:limit] + "..."


def use_cluster_token() -> None:
    """Ray Client sends the cluster's token only under RAY_AUTH_MODE=token, which a `ray start`ed
    cluster (token authentication on by default since Ray 2.52) requires: without it the client
    waits out its connection timeout. A local ray.init turns the mode on by itself when a token is
    there; do the same for ray://, unless the user set the mode. Ray reads the mode when it is
    first imported: `serve` calls this before; load() again for callers that did not."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"


# ---------------------------------------------------------------------------------------------
# Wire format: one conditioning in three small arrays (bit-exact for float32 arrays)
# ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class FrameRequest:
    session: str
    character: str
    action: str
    ints: np.ndarray            # int64 [seq, t_tick_ns, t_capture_ns]
    floats: np.ndarray          # float32 bone_angles|root|head|face|visemes|emotion
    scalars: np.ndarray         # float64 emotion_intensity, action_phase, action_weight, speaking, body_present,
    #                             face_present
    n_emotions: int
    move_from: str = ""         # a replica that failed this session: place it elsewhere
    t_arrived: float = 0.0      # time.monotonic() on the replica when the request reached it
    peers: int = 1              # requests of this tick the service sends to the same replica, this one included

    @classmethod
    def pack(cls, session: str, character: str, c: Conditioning, move_from: str = "") -> FrameRequest:
        floats = np.concatenate([np.asarray(a, np.float32).ravel() for a in
                                 (c.bone_angles, c.root, c.head, c.face, c.visemes, c.emotion)])
        return cls(session, character, c.action, np.array([c.seq, c.t_tick_ns, c.t_capture_ns], np.int64), floats,
                   np.array([c.emotion_intensity, c.action_phase, c.action_weight, c.speaking, c.body_present,
                             c.face_present],
                            np.float64), int(np.asarray(c.emotion).size), move_from)

    def conditioning(self) -> Conditioning:
        f = self.floats
        cuts = np.cumsum([len(Conditioning.neutral().bone_angles), 3, 3, len(Conditioning.neutral().face),
                          len(Conditioning.neutral().visemes)])
        bones, root, head, face, vis, emo = np.split(f, cuts)
        s = self.scalars
        return Conditioning(seq=int(self.ints[0]), t_tick_ns=int(self.ints[1]), t_capture_ns=int(self.ints[2]),
                            bone_angles=bones, root=root, head=head, face=face, visemes=vis, emotion=emo,
                            emotion_intensity=float(s[0]), action=self.action, action_phase=float(s[1]),
                            action_weight=float(s[2]), speaking=float(s[3]), body_present=float(s[4]),
                            face_present=float(s[5]))


@dataclass(slots=True)
class FrameReply:
    session: str
    seq: int
    replica: str                # the replica's unique id
    batch: int                  # sessions in the generator call that rendered it
    rgba: np.ndarray
    #: time.monotonic() on the replica when the request arrived, its batch began, its render began and
    #: ended (bench workers splits the round trip with them; one clock for all processes of a host)
    timings: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# The deployment (runs in the replicas)
# ---------------------------------------------------------------------------------------------

class GeneratorReplica:
    """One generator per replica; `render` batches the sessions' requests with @serve.batch."""

    def __init__(self, generator: str, device: str | None, size: int, render_threads: int) -> None:
        import ray
        from ray import serve

        from liveavatar.generation import registry

        self.gen = registry.create(generator, device, size)
        if self.gen.device == "cpu":
            import torch
            torch.set_num_threads(render_threads)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.actor_name = ray.get_runtime_context().get_actor_name() or ""

    def _render_batch(self, requests: list[FrameRequest], t_batch: float) -> list[FrameReply]:
        t_start = time.monotonic()
        frames = self.gen.render([r.conditioning() for r in requests], [r.character for r in requests])
        t_end = time.monotonic()
        return [FrameReply(r.session, int(r.ints[0]), self.replica, len(requests), frames[i],
                           (r.t_arrived, t_batch, t_start, t_end)) for i, r in enumerate(requests)]

    async def render(self, request: FrameRequest) -> FrameReply:
        request.t_arrived = time.monotonic()
        return await self.render_batch(request)   # type: ignore[arg-type,return-value]  # (@serve.batch)

    async def render_batch(self, requests: list[FrameRequest]) -> list[FrameReply]:
        """Wrapped in @serve.batch by _deployment; the generator call runs off the replica's event loop,
        which keeps taking requests."""
        return await asyncio.to_thread(self._render_batch, requests, time.monotonic())

    def prepare_character(self, name: str) -> None:
        self.gen.prepare_character(name)

    async def ping(self) -> str:
        """An empty round trip (bench workers: Ray Serve's own cost, without a frame)."""
        return self.replica

    def idle_clip(self, name: str, frames: int) -> np.ndarray:
        """(frames, S, S, 4): the character with nobody tracked, over one breathing cycle."""
        self.gen.prepare_character(name)
        conds = [Conditioning.neutral(t_tick_ns=int(i * IDLE_PERIOD_S / frames * 1e9)) for i in range(frames)]
        return np.asarray(self.gen.render(conds, [name] * frames))

    def describe(self) -> dict:
        return {"replica": self.replica, "actor": self.actor_name, "characters": self.gen.characters(),
                "info": self.gen.info(), "name": self.gen.name, "device": self.gen.device, "size": self.gen.size}


def _deployment(replicas: int, gpus: float, cpus: float, max_batch: int, batch_wait_s: float) -> Any:
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    # @serve.batch with this service's limits: all of a replica's sessions in one generator call
    def batch_size(requests: list[FrameRequest]) -> int:
        # a batch that holds all of its tick's requests counts as full: it starts now. So the wait
        # (batch_wait_s) is only for a tick whose count was wrong (a session just placed or moved),
        # and can be long enough that a tick's requests, sent one by one on busy cores, stay together.
        n = len(requests)
        return max_batch if n < max_batch and n >= max(r.peers for r in requests) else n

    batched = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s,
                          batch_size_fn=batch_size)(GeneratorReplica.render_batch)
    cls = type("GeneratorReplica", (GeneratorReplica,), {"render_batch": batched})
    return serve.deployment(
        cls, name="generator", num_replicas=replicas,
        ray_actor_options={"num_gpus": gpus, "num_cpus": cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        # one frame per session in flight, plus the odd prepare / idle-clip call
        max_ongoing_requests=max_batch + 4,
        # (ray types the field through pydantic as a dict; a class path is what it takes)
        request_router_config=RequestRouterConfig(
            request_router_class="liveavatar.interop.ray_router.SessionRouter"),  # type: ignore[arg-type]
        logging_config={"enable_access_log": False},   # a line per frame otherwise
        health_check_period_s=1.0, health_check_timeout_s=5.0, graceful_shutdown_timeout_s=1.0)


# ---------------------------------------------------------------------------------------------
# The client (runs in the service): a Generator whose render goes to the replicas
# ---------------------------------------------------------------------------------------------

@dataclass
class _Lane:
    """One session's link to its replica: at most one request in flight."""
    future: concurrent.futures.Future | None = None
    sent_seq: int = -1
    sent_at: float = 0.0
    frame: np.ndarray | None = None
    frame_seq: int = -1
    frame_at: float = 0.0          # when the frame's request was sent
    replica: str = ""
    move_from: str = ""
    first_sent_at: float = 0.0
    batch: int = 0                  # sessions in the generator call that rendered the frame
    placed_ms: float | None = None  # first request -> first frame
    timings: tuple[float, ...] = ()  # the frame's FrameReply.timings, then when the service took it


@dataclass
class WorkerStats:
    sent: int = 0
    replies: int = 0
    conflated: int = 0          # ticks that sent nothing: the session's previous request was in flight
    stale_dropped: int = 0      # replies too old or superseded when they came
    idle_frames: int = 0        # frames shown from the idle clip (lost / slow replica)
    failed: int = 0             # requests that raised (replica lost): re-sent elsewhere
    abandoned: int = 0          # requests given up after stale_after_s (replica hung)
    round_trip_ms: list[float] = field(default_factory=list)


class RayGenerator:
    """The Generator protocol over a Ray Serve deployment of generator `generator`."""

    def __init__(self, workers: str | None, generator: str = "auto", device: str | None = None, size: int = 256,
                 replicas: int | None = None, max_sessions: int = 16, fps: int = 30, render_threads: int = 1,
                 stale_after_s: float = 0.5, batch_wait_s: float = 0.005, cpus_per_replica: float = 1.0) -> None:
        self.workers = workers          # None: use the Ray already initialised in this process
        self.generator = generator
        self.name = f"ray:{generator}"
        self.requested_device = device
        self.device = device or "cpu"
        self.size = size
        self.replicas = replicas
        self.max_batch = max_sessions
        self.period_s = 1.0 / fps
        self.render_threads = render_threads
        self.stale_after_s = stale_after_s
        self.batch_wait_s = batch_wait_s
        self.cpus_per_replica = cpus_per_replica
        self.stats = WorkerStats()
        self._lanes: dict[str, _Lane] = {}
        self._idle: dict[str, np.ndarray] = {}
        self._characters: list[str] = []
        self._handle: Any = None
        self._by_reference_handle: Any = None
        #: True: calls go as Ray actor calls, replies through the object store (bench workers compares)
        self.by_reference = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started_ray = False
        self._lock = threading.Lock()
        self.gpus_per_replica = 0.0

    # -- life cycle ---------------------------------------------------------------------------
    def _join(self, address: str | None, env: dict | None, attempts: int = 3) -> None:
        """ray.init, tried again when the cluster's Ray Client server could not start the per-client
        server it forks for us ("Initialization failure from server"): that happens on a busy head
        and passes. Any other failure is the user's to fix and is said at once."""
        import ray

        for attempt in range(1, attempts + 1):
            try:
                ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False)
                return
            except (ConnectionError, RuntimeError, ValueError) as e:
                cause = " ".join(str(e).split())   # Ray may pass on a server's whole traceback
                if "Initialization failure from server" in cause and attempt < attempts:
                    log.warning("--workers %s: the cluster could not start a client server (try %d of %d); "
                                "trying again", self.workers, attempt, attempts)
                    time.sleep(2.0 * attempt)
                    continue
                hint = ("; a cluster with token authentication (Ray's default) needs its token here: "
                        "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN") if "timeout" in cause else ""
                # the server's last line says why (its traceback's head does not)
                raise UserError(f"--workers {self.workers}: cannot join the Ray cluster: "
                                f"{_last_words(cause)}{hint}") from None

    def load(self) -> None:
        import ray
        from ray import serve

        if self.workers is not None and not ray.is_initialized():
            address = None if self.workers == "auto" else self.workers
            # A local cluster's workers import liveavatar from this checkout.
            env = {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}} if address is None else None
            if address is not None:
                use_cluster_token()
            self._join(address, env)
            self._started_ray = True
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
        self.gpus_per_replica = 1.0 if gpus >= 1 else 0.0
        if self.gpus_per_replica:
            self.cpus_per_replica = min(self.cpus_per_replica, 0.5)   # the GPU is what a replica holds
        replicas = self.replicas or max(1, int(gpus))
        self.replicas = replicas
        # Serve would wait for ever for replicas the cluster cannot hold: say so now instead
        if replicas * self.gpus_per_replica > gpus or replicas * self.cpus_per_replica > cpus:
            raise UserError(f"--worker-replicas {replicas}: the Ray cluster has {gpus:g} GPUs and {cpus:g} CPUs; "
                            f"each replica needs {self.gpus_per_replica:g} GPU and {self.cpus_per_replica:g} CPU")
        serve.start(proxy_location="Disabled")
        deployment = _deployment(replicas, self.gpus_per_replica, self.cpus_per_replica, self.max_batch,
                                 self.batch_wait_s)
        app = deployment.bind(self.generator, self.requested_device, self.size, self.render_threads)
        self._by_reference_handle = serve.run(app, name=APP_NAME, route_prefix=None)
        self._handle = self._by_reference_handle.options(**FAST_CALLS)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ray-client", daemon=True)
        self._thread.start()
        desc = self._call("describe").result(timeout=120)
        self._characters = list(desc["characters"])
        self.device = desc["device"]
        self.size = int(desc["size"])
        self._replica_info = desc["info"]

    def warmup(self) -> None:
        default = "nova" if "nova" in self._characters else (self._characters[0] if self._characters else "nova")
        self.prepare_character(default)
        self.render([Conditioning.neutral()], [default])

    def close(self) -> None:
        """Delete our deployment (and leave the cluster if this process connected to it)."""
        from ray import serve

        try:
            serve.delete(APP_NAME)
        except Exception:  # the cluster may be gone already
            log.warning("could not delete the %s deployment", APP_NAME, exc_info=True)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._started_ray:   # a cluster we started stops with us; one we joined keeps its Serve
            import ray
            ray.shutdown()

    # -- calls --------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> concurrent.futures.Future:
        assert self._loop is not None, "load() first"
        fast = method in FAST_METHODS and not self.by_reference and self.size * self.size * 4 < GRPC_REPLY_MAX
        handle = getattr(self._handle if fast else self._by_reference_handle, method)

        async def call() -> Any:
            return await handle.remote(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

    # -- the Generator protocol ---------------------------------------------------------------
    def characters(self) -> list[str]:
        return list(self._characters)

    def prepare_character(self, name: str) -> None:
        # The replicas that get this character later prepare it on first use (render_by_character).
        clip = self._call("idle_clip", name, IDLE_FRAMES).result(timeout=120)
        with self._lock:
            self._idle = {**self._idle, name: clip}

    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        """One frame per conditioning, waiting for all of them (rows are sent as sessions #0..)."""
        if len(conds) != len(characters):
            raise UserError(f"{self.name}.render: {len(conds)} conditionings but {len(characters)} character names")
        futs = [self._call("render", FrameRequest.pack(f"#{i}", ch, c)) for i, (c, ch) in
                enumerate(zip(conds, characters))]
        out = np.empty((len(conds), self.size, self.size, 4), np.uint8)
        for i, f in enumerate(futs):
            out[i] = f.result(timeout=60).rgba
        return out

    def reset(self) -> None:
        with self._lock:
            self._lanes.clear()

    def worker_counters(self) -> dict[str, int]:
        """Requests by outcome since start (/metrics: liveavatar_worker_frames)."""
        s = self.stats
        return {"sent": s.sent, "replies": s.replies, "conflated": s.conflated, "stale_dropped": s.stale_dropped,
                "idle_frames": s.idle_frames, "failed": s.failed, "abandoned": s.abandoned}

    def info(self) -> dict:
        s = self.stats
        rt = np.asarray(s.round_trip_ms[-600:] or [0.0])
        lanes = dict(self._lanes)
        placement: dict[str, int] = {}
        for lane in lanes.values():
            if lane.replica:
                placement[lane.replica] = placement.get(lane.replica, 0) + 1
        return {"generator": self.name, "device": self.device, "size": self.size, "workers": self.workers,
                "replicas": self.replicas, "gpus_per_replica": self.gpus_per_replica,
                "sessions_per_replica": placement, **self.worker_counters(),
                "round_trip_ms": {"median": float(np.median(rt)), "p95": float(np.percentile(rt, 95))},
                "replica_generator": getattr(self, "_replica_info", {})}

    # -- the live path ------------------------------------------------------------------------
    def forget_session(self, sid: str) -> None:
        with self._lock:
            self._lanes.pop(sid, None)

    def lane(self, sid: str) -> _Lane | None:
        return self._lanes.get(sid)

    def _collect(self, lane: _Lane, now: float) -> None:
        fut = lane.future
        if fut is None or not fut.done():
            if fut is not None and now - lane.sent_at > self.stale_after_s:
                # hung or lost without a word: give up on it, move the session
                lane.future, lane.move_from = None, lane.replica
                fut.add_done_callback(self._count_late)
                self.stats.abandoned += 1
            return
        lane.future = None
        try:
            reply: FrameReply = fut.result()
        except Exception as e:  # the replica died or failed: move the session, idle meanwhile
            self.stats.failed += 1
            lane.move_from, lane.frame = lane.replica, None
            log.warning("generator worker %s lost a frame (%s); moving its session", lane.replica or "?",
                        type(e).__name__)
            return
        self.stats.replies += 1
        self.stats.round_trip_ms.append((now - lane.sent_at) * 1e3)
        del self.stats.round_trip_ms[:-2000]
        if reply.seq <= lane.frame_seq or now - lane.sent_at > self.stale_after_s:
            self.stats.stale_dropped += 1
            return
        lane.frame, lane.frame_seq, lane.frame_at = reply.rgba, reply.seq, lane.sent_at
        lane.replica, lane.move_from, lane.batch = reply.replica, "", reply.batch
        lane.timings = (*reply.timings, now)
        if lane.placed_ms is None:
            lane.placed_ms = (now - lane.first_sent_at) * 1e3

    def _count_late(self, fut: concurrent.futures.Future) -> None:
        self.stats.stale_dropped += 1

    def _idle_frame(self, character: str, now: float) -> np.ndarray | None:
        clip = self._idle.get(character)
        if clip is None and self._idle:
            clip = next(iter(self._idle.values()))
        if clip is None:
            return None
        return clip[int(now / IDLE_PERIOD_S * len(clip)) % len(clip)]

    def render_sessions(self, sessions: Sequence[str], conds: Sequence[Conditioning],
                        characters: Sequence[str], wait_s: float | None = None) -> np.ndarray:
        """(B, S, S, 4): each session's newest frame (see the module doc). Waits for this tick's
        replies up to `wait_s` (default: 80% of a frame period)."""
        n = len(sessions)
        out = np.zeros((n, self.size, self.size, 4), np.uint8)
        now = time.monotonic()
        lanes = []
        sent = []
        with self._lock:
            for sid in sessions:
                lanes.append(self._lanes.setdefault(sid, _Lane()))
        for lane in lanes:
            self._collect(lane, now)
        # each request says how many this tick sends to its replica: the replica's batch starts as
        # soon as they are all there instead of after the whole batch wait
        peers = Counter(lane.replica for lane in lanes if lane.future is None and lane.replica and not lane.move_from)
        for lane, sid, c, ch in zip(lanes, sessions, conds, characters):
            if lane.future is None:
                request = FrameRequest.pack(sid, ch, c, lane.move_from)
                request.peers = peers[lane.replica] if lane.replica and not lane.move_from else 1
                lane.future = self._call("render", request)
                lane.sent_seq, lane.sent_at = c.seq, now
                lane.first_sent_at = lane.first_sent_at or now
                self.stats.sent += 1
                sent.append(lane.future)
            else:
                self.stats.conflated += 1
        concurrent.futures.wait(sent, timeout=self.period_s * 0.8 if wait_s is None else wait_s)
        now = time.monotonic()
        for i, (lane, ch) in enumerate(zip(lanes, characters)):
            self._collect(lane, now)
            fresh = lane.frame is not None and now - lane.frame_at <= self.stale_after_s
            frame = lane.frame if fresh else self._idle_frame(ch, now)
            if not fresh:
                self.stats.idle_frames += 1
            if frame is None:
                frame = lane.frame     # no idle clip yet: hold the last frame rather than show nothing
            if frame is not None:
                out[i] = frame
        return out
