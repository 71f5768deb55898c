"""`liveavatar serve --host 0.0.0.0` as users run it: tokens are generated once, stored 0600,
printed once; requests need them; and no token ever reaches the log, even at debug level with
tokens sent in headers, in ?token=, wrong, or with failing requests."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server.harness import free_port, http

REPO = Path(__file__).resolve().parents[2]


def start_serve(config_dir: Path, log_dir: Path, *extra: str):
    port = free_port()
    out, err = open(log_dir / "stdout.log", "wb"), open(log_dir / "stderr.log", "wb")
    env = {**os.environ, "LIVEAVATAR_CONFIG_DIR": str(config_dir), "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "liveavatar.cli", "serve", "--host", "0.0.0.0",
                             "--port", str(port), "--size", "64", "--no-demo", "--log-level", "debug",
                             *extra], cwd=REPO, stdout=out, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _ready(url, config_dir):
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: {(log_dir / 'stderr.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("serve did not become ready")
        time.sleep(0.3)
    return proc, url, (out, err)


def _ready(url: str, config_dir: Path) -> bool:
    """Healthy, and the default session exists (it is made just after warm-up)."""
    try:
        view = json.loads((config_dir / "server-tokens.json").read_text())["viewer_token"]
        status, body = http(url + "/api/sessions", headers={"Authorization": f"Bearer {view}"})
    except (OSError, ValueError):
        return False
    return status == 200 and any(s["session"] == "default" for s in body["sessions"])


def stop(proc, files) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in files:
        f.close()


@pytest.fixture(scope="module")
def remote_serve(tmp_path_factory):
    config_dir = tmp_path_factory.mktemp("config")
    logs = tmp_path_factory.mktemp("logs")
    proc, url, files = start_serve(config_dir, logs)
    tokens = json.loads((config_dir / "server-tokens.json").read_text())
    # exercise auth every way, including failures that log
    ctl, view = tokens["token"], tokens["viewer_token"]
    near_miss = ctl[:-1] + ("y" if ctl.endswith("x") else "x")   # one character off, never the token itself
    calls = [
        ("/api/sessions/default/emotion", {"Authorization": f"Bearer {ctl}"}, {"name": "happy"}),
        (f"/api/sessions/default/emotion?token={ctl}", {}, {"name": "nope"}),
        (f"/api/sessions/default/action?token={view}", {}, {"name": "wave"}),
        (f"/api/sessions/missing/state?token={view}", {}, None),
        ("/api/sessions/default/state", {"Authorization": f"Bearer {near_miss}"}, None),
        (f"/whip/default?token={ctl}", {"Content-Type": "application/sdp"}, b"v=0\r\nbroken"),
        (f"/api/sessions/default/feeds?token={ctl}", {}, {"kind": "mpegts", "url": "udp://256.1.1.1:1"}),
    ]
    results = []
    for path, headers, body in calls:
        results.append(http(url + path, "POST" if body is not None else "GET", body, headers)[0])
    stop(proc, files)
    return tokens, config_dir, logs, results


def test_tokens_are_generated_stored_privately_and_required(remote_serve):
    tokens, config_dir, logs, results = remote_serve
    path = config_dir / "server-tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(tokens["token"]) >= 32 and tokens["token"] != tokens["viewer_token"]
    assert results[0] == 200                     # control token works
    assert results[1] in (400, 422)              # unknown emotion: a client error
    assert results[2] == 403                     # viewer token cannot control
    assert results[4] == 401                     # near-miss token


def test_tokens_are_printed_once_and_never_logged(remote_serve):
    tokens, _, logs, _ = remote_serve
    stdout = (logs / "stdout.log").read_text()
    stderr = (logs / "stderr.log").read_text()
    assert "DEBUG" in stderr or "INFO" in stderr, "the service logged nothing: the check would be empty"
    for secret in (tokens["token"], tokens["viewer_token"]):
        assert secret not in stderr, "a token reached the log"
    # shown once in the banner, the first time only (the streamer needs it to connect)
    assert stdout.count(tokens["token"]) >= 1 and "printed only this once" in stdout
    assert "Traceback" not in stderr


def test_second_start_reuses_stored_tokens_without_printing_them(remote_serve, tmp_path):
    tokens, config_dir, _, _ = remote_serve
    proc, url, files = start_serve(config_dir, tmp_path)
    try:
        assert http(url + "/api/sessions", headers={"Authorization": f"Bearer {tokens['viewer_token']}"})[0] == 200
        assert http(url + "/api/sessions")[0] == 401
    finally:
        stop(proc, files)
    out = (tmp_path / "stdout.log").read_text() + (tmp_path / "stderr.log").read_text()
    assert tokens["token"] not in out and tokens["viewer_token"] not in out
    assert "<token>" in out
