"""`liveavatar serve --workers auto` as a user runs it: the service starts a local Ray cluster,
deploys the generator there and its default session renders on a replica (a separate module
from test_ray_workers.py: this service starts its own cluster, which must not find that one's)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.interop.serve_workers import http_get, wait_for_replies
from tests.server.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serve_with_workers_auto_renders_the_default_session_on_a_replica(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "COLUMNS": "250", "LIVEAVATAR_CONFIG_DIR": str(tmp_path),
           # the cluster's replicas import liveavatar from this checkout
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    log = open(tmp_path / "serve.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "liveavatar", "serve", "--workers", "auto", "--worker-replicas", "1",
                          "--size", "64", "--no-demo", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                         text=True, env=env, cwd=ROOT)
    try:
        health = wait_for_replies(p, port, tmp_path / "serve.log")
        info = health["generator_info"]
        assert health["generator"] == "ray:auto" and info["replicas"] == 1
        assert list(info["sessions_per_replica"].values()) == [1]      # the default session, placed
        assert info["replica_generator"]["generator"] == "auto"         # what the replica really runs
        status, png = http_get(f"http://127.0.0.1:{port}/api/sessions/default/frame.png")
        assert status == 200
        rgba = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert rgba.shape == (64, 64, 4) and rgba[..., 3].any()
        assert "Ready: generator ray:auto" in (tmp_path / "serve.log").read_text()
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        replies = [line for line in metrics.decode().splitlines()
                   if line.startswith('liveavatar_worker_frames_total{outcome="replies"}')]
        assert status == 200 and len(replies) == 1 and float(replies[0].split()[-1]) > 0
    finally:
        p.send_signal(signal.SIGINT)    # Ctrl-C: the service deletes its deployment, stops its cluster
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        log.close()
