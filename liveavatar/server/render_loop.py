"""The device worker: one generator call per output tick for all live sessions."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from liveavatar.clock import Ticker
from liveavatar.errors import UserError
from liveavatar.runtime import Worker
from liveavatar.types import Conditioning

if TYPE_CHECKING:
    from liveavatar.server.engine import Engine

log = logging.getLogger("liveavatar.server")


class RenderLoop(Worker):
    """The device worker: one generator call per output tick for all live sessions."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("render")
        self.engine = engine
        self.ticker = Ticker(engine.cfg.fps)
        self.frames = 0
        self.errors = 0               # render ticks that raised (the frame is skipped, not retried)
        self.error: str | None = None

    def run(self) -> None:
        eng = self.engine
        gen = eng.generator
        assert gen is not None   # started after the warm-up loaded it
        conds: list[Conditioning] = []
        chars: list[str] = []
        events: list[int] = []
        last_reload = time.monotonic()
        last_error_log = 0.0
        while not self.halted:
            skipped = self.ticker.skipped
            t = self.ticker.wait()
            sessions = eng.live
            if not sessions:
                continue
            # late: output ticks were skipped (frames lost) since the last one
            late = self.ticker.skipped > skipped
            conds.clear()
            chars.clear()
            events.clear()
            t_tick = time.perf_counter()
            try:
                for s in sessions:
                    cond, ev = s.tick(t)
                    conds.append(cond)
                    chars.append(s.character)
                    events.append(ev)
                t0 = time.perf_counter()
                # session ids too: a generator on remote workers keeps one request in flight each
                frames = gen.render_sessions([s.sid for s in sessions], conds, chars)
                t1 = time.perf_counter()
                eng.timer.record("render", (t1 - t0) * 1e3)
                t_rendered = time.monotonic_ns()
                for i, s in enumerate(sessions):
                    s.publish(frames[i], conds[i], events[i], t_rendered)
                self.frames += 1
                eng.timer.record("publish", (time.perf_counter() - t1) * 1e3)
                eng.timer.record("tick", (time.perf_counter() - t_tick) * 1e3)
            except Exception as e:  # keep the clock running: the next tick renders again
                self.errors += 1
                self.error = f"{type(e).__name__}: {e}"
                now = time.monotonic()
                if now - last_error_log >= 1.0:  # a generator failing every tick logs once a second
                    last_error_log = now
                    log.exception("render tick failed (%d so far)", self.errors)
            eng.governor.tick(late)
            now = time.monotonic()
            if now - last_reload > 1.0:
                last_reload = now
                for s in sessions:
                    if hasattr(s.conditioner, "reload_if_changed"):
                        try:
                            with s.lock:
                                s.conditioner.reload_if_changed()
                        except UserError as e:
                            log.error("session %s: %s", s.sid, e)
