"""`liveavatar serve` as a child of a bench (bench e2e, interop, sfu): started on a free port, its
output in a log file (an unread pipe fills up and stalls the service), ready once it answers, and
stopped with SIGTERM (then SIGKILL) however the bench ends."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from liveavatar.errors import UserError
from liveavatar.runtime.child import stop_process


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=2) as r:
        return bool(r.status == 200)


@dataclass
class Service:
    proc: subprocess.Popen
    url: str        # http://127.0.0.1:PORT
    log: Path


@contextmanager
def running_service(args: list[str], env: dict[str, str] | None = None, ready: Callable[[str], bool] = healthy,
                    what: str = "healthy", timeout_s: float = 180.0, stop_timeout_s: float = 20.0,
                    port: int | None = None) -> Iterator[Service]:
    """`liveavatar serve --port PORT --no-demo ARGS` until `ready(url)` holds (an OSError counts
    as not yet); one-line UserError with the log's last line if it exits or is not `what` in time."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="liveavatar-bench-serve-") as tmp:
        log_path = Path(tmp) / "serve.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "liveavatar", "serve", "--port", str(port), "--no-demo",
                                     *args], stdout=log, stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
            service = Service(proc, f"http://127.0.0.1:{port}", log_path)
            try:
                _wait(service, ready, what, timeout_s)
                yield service
            finally:
                stop_process(proc, stop_timeout_s)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:200] if lines else "no output"


def _wait(service: Service, ready: Callable[[str], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise UserError(f"`liveavatar serve` exited early (code {service.proc.returncode}): "
                            f"{_last_line(service.log)}")
        try:
            if ready(service.url):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise UserError(f"`liveavatar serve` not {what} within {timeout_s:.0f} s: {_last_line(service.log)}")
