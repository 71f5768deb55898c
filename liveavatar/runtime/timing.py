"""Per-stage timing: bounded ring buffers of durations, summarised as median / p95."""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Any

import numpy as np


class StageTimer:
    """Records how long each named stage takes. Bounded (keeps the last `window` samples)."""

    def __init__(self, window: int = 2000) -> None:
        self._samples: dict[str, deque[float]] = {}
        self._window = window
        self._lock = threading.Lock()

    def record(self, stage: str, ms: float) -> None:
        with self._lock:
            q = self._samples.get(stage)
            if q is None:
                q = self._samples[stage] = deque(maxlen=self._window)
            q.append(ms)

    @contextmanager
    def measure(self, stage: str) -> Any:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(stage, (time.perf_counter() - t0) * 1e3)

    def summary(self, skip: int = 0) -> dict[str, dict[str, float]]:
        """{stage: {median_ms, p95_ms, n}}, ignoring the first `skip` samples (warm-up)."""
        out = {}
        with self._lock:
            items = [(k, list(v)) for k, v in self._samples.items()]
        for stage, vals in items:
            vals = vals[skip:] if len(vals) > skip else vals
            if not vals:
                continue
            a = np.asarray(vals)
            out[stage] = {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
                          "n": int(a.size)}
        return out
