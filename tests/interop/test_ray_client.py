"""`liveavatar serve --workers ray://HOST:PORT` against a real Ray cluster: `ray start --head` in the
foreground (`--block`), its own ports and temp dir, the Ray Client server on a free port, stopped
by SIGTERM to its whole process group (children included) at the end. Ray's token authentication
stays on, as a user's cluster has it: the service finds the token (~/.ray/auth_token, written by
`ray start` when there is none) and sends it."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveavatar.runtime.child import stop_process, stop_process_group
from tests.interop.serve_workers import http_get, wait_for_replies
from tests.server.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[int, subprocess.Popen, Path]]:
    """(the Ray Client port, the `ray start` process, its temp dir) of a 2-CPU head with one
    logical GPU."""
    pytest.importorskip("ray.serve")
    # a short temp dir: Ray's Unix socket paths must stay under 108 bytes
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    client_port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=1", "--include-dashboard=false",
         "--node-ip-address=127.0.0.1", f"--port={free_port()}", f"--ray-client-server-port={client_port}",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        # `ray start` says "Ray runtime started" once every head process is up; the client port
        # listens earlier, and a client let in then can find no server to fork for it
        while not (_listening(client_port) and "Ray runtime started" in (Path(temp) / "ray-start.log").read_text()):
            assert proc.poll() is None, (Path(temp) / "ray-start.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Ray Client server never listened"
            time.sleep(1.0)
        yield client_port, proc, Path(temp)
    finally:
        stop_process_group(proc, 40)
        log.close()
        assert not _group_alive(proc.pid), "a process of the Ray cluster outlived SIGTERM and SIGKILL"
        shutil.rmtree(temp, ignore_errors=True)


def _client_server_logs(temp: Path) -> str:
    """The tails of the head's Ray Client server logs: why a client could not join."""
    logs = sorted((temp / "session_latest" / "logs").glob("ray_client_server*.err"))
    return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-1500:]}" for f in logs)


@pytest.mark.slow
def test_serve_with_workers_ray_address_renders_on_the_clusters_replica(
        ray_head: tuple[int, subprocess.Popen, Path], tmp_path: Path) -> None:
    client_port, head, temp = ray_head
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(COLUMNS="250", LIVEAVATAR_CONFIG_DIR=str(tmp_path))
    log = open(tmp_path / "serve.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "liveavatar", "serve", "--workers", f"ray://127.0.0.1:{client_port}",
                          "--worker-replicas", "1", "--size", "64", "--no-demo", "--port", str(port)],
                         stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        try:
            health = wait_for_replies(p, port, tmp_path / "serve.log")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_client_server_logs(temp)}") from None
        info = health["generator_info"]
        assert info["workers"] == f"ray://127.0.0.1:{client_port}" and info["replicas"] == 1
        assert info["gpus_per_replica"] == 1.0                     # the head's logical GPU holds the replica
        assert list(info["sessions_per_replica"].values()) == [1]  # the default session, placed
        status, png = http_get(f"http://127.0.0.1:{port}/api/sessions/default/frame.png")
        assert status == 200
        rgba = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert rgba.shape == (64, 64, 4) and rgba[..., 3].any()
    finally:
        p.send_signal(signal.SIGINT)    # Ctrl-C: the service deletes its deployment, leaves the cluster
        try:
            code = p.wait(60)
        except subprocess.TimeoutExpired:
            stop_process(p, 10)
            code = None
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert head.poll() is None          # a joined cluster keeps running after the service
