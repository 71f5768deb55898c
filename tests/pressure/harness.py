"""What the soak and fault tests share: `liveavatar serve` as a real subprocess (its own RSS,
threads and log), /proc and /metrics sampling, a real Chromium streaming a real clip, and a CPU
hog. Starting and stopping is by PID only."""
from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.server.harness import free_port, http

REPO = Path(__file__).resolve().parents[2]
#: Log lines that fail a soak: errors and anything that printed a traceback.
BAD_LOG = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


class ServeProcess:
    """`python -m liveavatar.cli serve` on a free port, stdout+stderr into one log file."""

    def __init__(self, log_path: Path, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "liveavatar.cli", "serve", "--port", str(self.port), *args],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200", **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> ServeProcess:
        """Healthy and the default session exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status, body = http(self.url + "/api/sessions")
                if status == 200 and any(s["session"] == "default" for s in body["sessions"]):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"serve not ready within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def bad_log_lines(self, since: int = 0) -> list[str]:
        return [ln for ln in self.log()[since:].splitlines() if BAD_LOG.search(ln)]

    def proc_status(self) -> dict[str, int]:
        """VmRSS (kB) and OS thread count of the serve process, from /proc."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def metrics(self) -> dict[str, float]:
        """Prometheus exposition -> {'name{labels}': value} (no parser needed for our own lines)."""
        status, text = http(self.url + "/metrics")
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def metric(m: dict[str, float], name: str, **labels: str) -> float:
    """One sample of `name` whose labels include `labels` (0 when absent)."""
    names = (name, name + "_total")   # prometheus-client adds _total to counters
    for key, value in m.items():
        if key in names or key.startswith((name + "{", name + "_total{")):
            if all(f'{k}="{v}"' in key for k, v in labels.items()):
                return value
    return 0.0


@dataclass
class CpuHog:
    """`workers` busy-looping Python processes for at most `seconds` (they end themselves)."""
    workers: int = 2
    seconds: float = 20.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __enter__(self) -> CpuHog:
        code = f"import time\nend = time.monotonic() + {self.seconds}\nwhile time.monotonic() < end: pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.workers)]
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20)[-1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1))
