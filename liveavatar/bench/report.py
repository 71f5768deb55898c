"""Shared benchmark helpers: statistics after warm-up, machine info, result tables."""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def stats(samples_ms: Iterable[float], warmup: int = 0) -> dict[str, float]:
    a = np.asarray(list(samples_ms), dtype=np.float64)[warmup:]
    if a.size == 0:
        return {"median": float("nan"), "p95": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "n": int(a.size)}


def machine() -> dict:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def row(metric: str, median: float, p95: float | None = None, unit: str = "", note: str = "") -> dict:
    return {"metric": metric, "median": median, "p95": p95, "unit": unit, "note": note}


def result(name: str, rows: list[dict], **extra: Any) -> dict:
    return {"benchmark": name, "machine": machine(), "rows": rows, **extra}


def markdown(results: list[dict]) -> str:
    lines = ["| benchmark | metric | median | p95 | unit | note |", "|---|---|---|---|---|---|"]
    for r in results:
        for x in r["rows"]:
            p95 = "" if x.get("p95") is None else f"{x['p95']:.1f}"
            lines.append(f"| {r['benchmark']} | {x['metric']} | {x['median']:.1f} | {p95} | "
                         f"{x.get('unit', '')} | {x.get('note', '')} |")
    m = results[0]["machine"] if results else machine()
    lines.append("")
    lines.append(f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
                 f"torch {m.get('torch', '?')}{', GPU ' + m['gpu'] if 'gpu' in m else ', no GPU'}; "
                 f"1-min load average at start {m.get('loadavg_1m', float('nan')):.2f}.")
    return "\n".join(lines)


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"bench {res['benchmark']}")
    for col in ("metric", "median", "p95", "unit", "note"):
        t.add_column(col)
    for x in res["rows"]:
        t.add_row(x["metric"], f"{x['median']:.2f}", "" if x.get("p95") is None else f"{x['p95']:.2f}",
                  x.get("unit", ""), x.get("note", ""))
    Console().print(t)


def save(res: dict | list[dict], path: Path) -> None:
    path.write_text(json.dumps(res, indent=2, default=float))


def baseline_ms(repeats: int = 15) -> float:
    """A fixed CPU workload (numpy matmul + a Python loop), median ms. Measured at the start and
    end of a run so figures from a noisy shared machine can be read as ratios against it."""
    import time
    a = np.random.default_rng(0).standard_normal((192, 192)).astype(np.float32)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b = a
        for _ in range(20):
            b = np.tanh(b @ a * 0.01)
        s = 0
        for i in range(20000):
            s += i * i
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))
