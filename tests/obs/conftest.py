"""Fixtures that run real OBS Studio headless (Xvfb + llvmpipe, websocket auth with a random
password on a free port), started and stopped by PID. See tests/obs/headless.py."""
from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.obs.headless import HeadlessObs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "integrations" / "obs" / "liveavatar_obs.py"

logging.getLogger("obsws_python").setLevel(logging.CRITICAL)


@pytest.fixture(scope="module")
def obs_factory(tmp_path_factory):
    """start(**HeadlessObs fields) -> a running OBS; all are stopped when the module ends."""
    started: list[HeadlessObs] = []

    def start(**kwargs) -> HeadlessObs:
        o = HeadlessObs(tmp_path_factory.mktemp("obs"), **kwargs)
        started.append(o)
        return o.start()

    yield start
    for o in started:
        o.stop()


@pytest.fixture(scope="module")
def obs_studio(obs_factory) -> HeadlessObs:
    return obs_factory()


def cli_env(o: HeadlessObs, **extra: str) -> dict:
    """Environment for `liveavatar obs ...` pointing at this OBS (the OBS_WEBSOCKET_* route)."""
    return {**os.environ, "OBS_WEBSOCKET_HOST": "127.0.0.1", "OBS_WEBSOCKET_PORT": str(o.port),
            "OBS_WEBSOCKET_PASSWORD": o.password, **extra}


class RecordingService:
    """Stands in for `liveavatar serve` where only the HTTP requests OBS's script sends matter."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, dict]] = []
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with outer.arrived:
                    outer.requests.append(("POST", self.path, dict(self.headers), body))
                    outer.arrived.notify_all()
                data = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float) -> list:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
