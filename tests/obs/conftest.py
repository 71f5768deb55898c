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


def run_cli(env: dict, *args: str, timeout: float = 60):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "liveavatar.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def screenshot(client, source: str, timeout: float = 20.0, width: int | None = None):
    """RGBA array of what OBS renders for `source`. OBS answers 702 until the source has a
    frame (a media source's first frame takes ~2 s), so retry until then."""
    import base64
    import time

    import cv2
    import numpy as np
    from obsws_python.error import OBSSDKRequestError

    data = {"sourceName": source, "imageFormat": "png"}
    if width:
        data["imageWidth"] = width
    deadline = time.monotonic() + timeout
    while True:
        try:
            shot = client.send("GetSourceScreenshot", data, raw=True)
            break
        except OBSSDKRequestError as e:
            if e.code != 702 or time.monotonic() > deadline:
                raise
            time.sleep(0.25)
    png = base64.b64decode(shot["imageData"].split(",", 1)[1])
    bgra = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)
