"""The session table: the generator's lifecycle, admission (warm-up, the session limit),
creating and closing sessions, and what the render loop and /health read from it."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from liveavatar.errors import NotFoundError, UserError
from liveavatar.generation.protocol import LiveGenerator, live_generator
from liveavatar.runtime import StageTimer, TrackingGovernor
from liveavatar.server import actions, timecode
from liveavatar.server.config import ServerConfig
from liveavatar.server.render_loop import RenderLoop
from liveavatar.server.session import Session
from liveavatar.server.stages import Stages
from liveavatar.types import EventSource

log = logging.getLogger("liveavatar.server")


class AdmissionError(UserError):
    """The service is at its session limit (or still warming up): try again later."""
    http_status = 503

    def __init__(self, message: str, code: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class Engine:
    """The live sessions and the one generator that renders them all (on the render loop)."""

    def __init__(self, cfg: ServerConfig, stages: Stages, loop: asyncio.AbstractEventLoop | None,
                 flat_bg: tuple[int, int, int] = (0, 255, 0)) -> None:
        self.cfg = cfg
        self.stages = stages
        # None until start() takes the running loop (tests build an Engine without one).
        self.loop: asyncio.AbstractEventLoop = loop  # type: ignore[assignment]
        self.flat_bg = flat_bg
        self.wallclock = timecode.WallClockMap()
        self.timer = StageTimer(window=600)
        self.generator: LiveGenerator | None = None
        self.ready = False
        self.warmup_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self.live: tuple[Session, ...] = ()   # snapshot read by the render thread
        self.render_loop: RenderLoop | None = None
        # Setup work that must stay off the loop and out of aiortc's default executor.
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="setup")
        self._creating: dict[str, asyncio.Future] = {}
        self.started_at = time.monotonic()
        self.worker_restarts = 0      # perception worker threads found dead and replaced
        # the render loop reports its ticks; perception workers slow down when they run late
        self.governor = TrackingGovernor(cfg.fps)

    # -- startup / shutdown -------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            made = await self.loop.run_in_executor(self.pool, self.stages.generator)
            self.generator = live_generator(made)
            if self.cfg.character:      # --character: new sessions start as it, so load it now
                await self.loop.run_in_executor(self.pool, self.generator.prepare_character, self.cfg.character)
        except UserError as e:
            self.warmup_error = str(e)
            raise
        except Exception as e:
            self.warmup_error = f"{type(e).__name__}: {e}"
            raise
        self.render_loop = RenderLoop(self)
        self.render_loop.start()
        self.ready = True

    async def stop(self) -> None:
        if self.render_loop:
            await self.loop.run_in_executor(None, self.render_loop.stop, 2.0)
        for s in list(self.sessions.values()):
            await self.remove(s.sid)
        if self.generator is not None:   # remote workers: delete the deployment
            await self.loop.run_in_executor(self.pool, self.generator.close)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def characters(self) -> list[str]:
        return list(self.generator.characters()) if self.generator else []

    def default_character(self) -> str:
        chars = self.characters()
        if self.cfg.character:
            return self.cfg.character       # prepared (so known) in start()
        return "nova" if "nova" in chars or not chars else chars[0]

    # -- sessions -----------------------------------------------------------------------------
    def get(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise NotFoundError(f"no session {sid!r}; sessions: {', '.join(sorted(self.sessions)) or 'none'}")
        s.last_used = time.monotonic()
        return s

    async def get_or_create(self, sid: str) -> Session:
        if not self.ready:
            raise AdmissionError("the service is still warming up; retry in a few seconds",
                                 "warming_up", retry_after_s=2)
        s = self.sessions.get(sid)
        if s is not None:
            s.last_used = time.monotonic()
            return s
        pending = self._creating.get(sid)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self.sessions) + len(self._creating) >= self.cfg.max_sessions:
            raise AdmissionError(
                f"session limit reached ({self.cfg.max_sessions} live sessions); "
                "end one or start the service with a higher --max-sessions",
                "session_limit", limit=self.cfg.max_sessions, active=len(self.sessions),
                retry_after_s=10)
        fut = self.loop.create_future()
        self._creating[sid] = fut
        try:
            perception, conditioner = await self.loop.run_in_executor(self.pool, self._make_stages)
            s = Session(sid, self, perception, conditioner, self.default_character())
            await self.loop.run_in_executor(self.pool, actions.use_character_actions, s)
            s.start()
            self.sessions[sid] = s
            self.live = tuple(self.sessions.values())
            fut.set_result(s)
            log.info("session %s created", sid)
            return s
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._creating[sid]

    def _make_stages(self) -> tuple[Any, Any]:   # (perception, conditioner)
        return self.stages.perception(), self.stages.conditioner()

    async def remove(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        self.live = tuple(self.sessions.values())
        if self.generator is not None:
            self.generator.forget_session(sid)
        if s.ingest is not None:
            await s.ingest.close()
        await self.loop.run_in_executor(self.pool, s.close)
        log.info("session %s closed", sid)

    async def reap_idle(self) -> None:
        """Forget sessions (other than 'default') nobody has used for `session_idle_s`."""
        now = time.monotonic()
        for sid, s in list(self.sessions.items()):
            if sid != "default" and not s.busy and now - s.last_used > self.cfg.session_idle_s:
                await self.remove(sid)

    def revive_workers(self) -> int:
        """Replace any session's perception worker whose thread died (a crash in native code, a
        BaseException): the avatar idles meanwhile instead of staying frozen on stale cues.
        Called ~1 Hz; restarts are logged and counted (/health, /metrics)."""
        revived = 0
        for s in list(self.sessions.values()):
            if getattr(s.worker, "alive", True):
                continue
            log.error("session %s: perception worker died; restarting it", s.sid)
            s.worker = self.stages.worker(s.perception, s.frames_in, s.cues, self.governor.min_interval_s)
            s.worker.start()
            self.worker_restarts += 1
            revived += 1
        return revived

    # -- sources ------------------------------------------------------------------------------
    def drive_from_file(self, s: Session, path: Path) -> None:
        if self.stages.iter_media is None:
            raise UserError("file sources are not available in this build (liveavatar.sources missing)")
        s.drive_from_file(path, self.stages.iter_media)

    def stop_file(self, s: Session) -> None:
        s.stop_file()

    # -- character ----------------------------------------------------------------------------
    async def set_character(self, s: Session, name: str, source: EventSource) -> dict:
        known = self.characters()
        if self.generator is None or name not in known:   # no generator yet: it knows no characters
            raise NotFoundError(f"unknown character {name!r}; available: {', '.join(known)}")
        await self.loop.run_in_executor(self.pool, self.generator.prepare_character, name)
        s.character = name
        await self.loop.run_in_executor(self.pool, actions.use_character_actions, s)   # its own action set
        with s.lock:
            s.events_applied += 1
        s.publish_event({"type": "control", "session": s.sid, "kind": "character", "name": name,
                         "source": source.value, "mode": "momentary"})
        return s.state()

    # -- stats --------------------------------------------------------------------------------
    def render_ms(self) -> float:
        return self.timer.summary().get("render", {}).get("median_ms", 0.0)

    def loop_lag_ms(self) -> dict:
        lag = self.timer.summary().get("loop_lag", {})
        return {"median": round(lag.get("median_ms", 0.0), 1), "p95": round(lag.get("p95_ms", 0.0), 1)}

    def ticker_skipped(self) -> int:
        return self.render_loop.ticker.skipped if self.render_loop else 0
