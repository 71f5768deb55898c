"""What the two `serve --workers` tests share: a GET that returns error statuses too, and the wait
until the service's generator workers have sent back a frame."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for_replies(p: subprocess.Popen, port: int, log: Path, timeout_s: float = 300) -> dict:
    """/health once the workers have replied at least once; fails with the log's tail if the
    service exits or does not get there in time."""
    deadline = time.monotonic() + timeout_s
    health: dict = {}
    while True:
        assert p.poll() is None, log.read_text()[-2000:]
        try:
            status, body = http_get(f"http://127.0.0.1:{port}/health")
            health = json.loads(body)
            if status == 200 and health["generator_info"]["replies"] > 0:
                return health
        except OSError:
            pass
        assert time.monotonic() < deadline, (health, log.read_text()[-2000:])
        time.sleep(1.0)
