"""Test harness for the live service: a real LiveAvatar service on a free port, run on its own
thread and event loop so sync (Playwright) and async (aiortc, aiohttp) tests can both talk to it,
plus small HTTP and polling helpers. Import from here (not from a conftest).

`running_server(...)` is the one way a test module sets up a service: ServerConfig fields as
keywords, the stages from a factory (the fake perception by default), stopped afterwards."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from liveavatar.server.config import ServerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, cfg: ServerConfig, stages=None) -> None:
        self.cfg = cfg
        self.stages = stages
        self.loop = asyncio.new_event_loop()
        self.app = None
        self._runner = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="test-server")
        self._started = threading.Event()
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    @property
    def engine(self):
        from liveavatar.server.state import ENGINE
        return self.app[ENGINE]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._setup())
        except BaseException as e:  # surfaced by start()
            self.error = e
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    async def _setup(self) -> None:
        from aiohttp import web

        from liveavatar.server.app import create_app
        self.app = create_app(self.cfg, stages=self.stages)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.cfg.host, self.cfg.port).start()

    def start(self, timeout: float = 120.0) -> ServerThread:
        return self.launch(timeout).wait_healthy(timeout)

    def launch(self, timeout: float = 60.0) -> ServerThread:
        """Listening (health may still say 503)."""
        self._thread.start()
        self._started.wait(timeout)
        if self.error:
            raise self.error
        return self

    def wait_healthy(self, timeout: float = 120.0) -> ServerThread:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = http(self.url + "/health")
            if status == 200 and "default" in self.engine.sessions:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"service not healthy within {timeout} s: {http(self.url + '/health')}")

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop (to inspect or poke it safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def http(url: str, method: str = "GET", body: bytes | dict | None = None,
         headers: dict | None = None) -> tuple[int, dict | bytes | str]:
    """(status, parsed body) without raising on 4xx/5xx."""
    hdrs = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, ctype, data = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, data = e.code, e.headers.get("Content-Type", ""), e.read()
    if "json" in ctype:
        return status, json.loads(data)
    if ctype.startswith("text/") or "sdp" in ctype:
        return status, data.decode()
    return status, data


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _fake_stages(cfg: ServerConfig) -> Any:
    from tests.server.fakes import fake_perception_stages
    return fake_perception_stages(cfg)


@contextmanager
def running_server(stages: Callable[[ServerConfig], Any] | None = _fake_stages, *, demo: bool = False,
                   timeout: float = 120.0, **config: Any) -> Iterator[ServerThread]:
    """A started (healthy) service with `ServerConfig(port=<free>, demo=demo, **config)` and
    `stages(cfg)` (None: the real stages); stopped on exit. Use it in a fixture:

        @pytest.fixture(scope="module")
        def server():
            with running_server(size=64) as srv:
                yield srv
    """
    cfg = ServerConfig(port=free_port(), demo=demo, **config)
    srv = ServerThread(cfg, stages(cfg) if stages is not None else None).start(timeout)
    try:
        yield srv
    finally:
        srv.stop()
