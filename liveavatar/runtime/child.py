"""Helper processes that hold the GIL too long for our threads (MediaPipe, pocketsphinx): started
with `spawn` (never fork a process that runs native threads), talked to over one pipe, and
ready only once they say so."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from liveavatar.errors import UserError


class Child:
    """A daemon process running `target(conn, *args)`. The target first sends ("ready", value) or
    ("error", message); the constructor returns after "ready" (`ready_value` holds the value) and
    raises `error(message)` otherwise. `stop()` sends `goodbye`, closes the pipe and waits."""

    def __init__(self, target: Callable[..., None], args: tuple, name: str, goodbye: Any,
                 error: Callable[[str], Exception] = UserError) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args), name=name, daemon=True)
        self.goodbye = goodbye
        self.proc.start()
        child.close()
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            reply = ("error", f"{name} exited while starting (code {self.proc.exitcode})")
        if reply[0] != "ready":
            self.stop()
            raise error(reply[1])
        self.ready_value = reply[1] if len(reply) > 1 else None

    @property
    def exitcode(self) -> int | None:
        return self.proc.exitcode

    def stop(self, timeout: float = 3.0) -> None:
        try:
            self.conn.send(self.goodbye)
        except (OSError, ValueError):
            pass
        self.conn.close()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(1.0)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM (a clean shutdown, children included), then SIGKILL if it is not gone in `timeout` s."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the process group `proc` leads (started with start_new_session=True), then SIGKILL
    to what is left of it after `timeout` s: for daemons that leave their children behind when the
    leader goes (`ray start --block`: Ray's GCS server outlives it by ~15 s)."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()     # reap the leader, so that the group empties
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
