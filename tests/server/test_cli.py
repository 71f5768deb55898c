"""`liveavatar serve` as a user runs it: printed URLs and tokens, one-line errors."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from tests.server.harness import free_port


def serve(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "liveavatar", "serve", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_bad_options_are_one_line_errors(tmp_path):
    r = serve("--source", str(tmp_path / "missing.mp4"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "missing.mp4" in r.stderr and "no such file" in r.stderr
    r = serve("--size", "333", "--port", str(free_port()))
    assert r.returncode == 2 and "size" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = serve("--port", str(busy.getsockname()[1]), "--no-demo")
    assert r.returncode == 2 and "in use" in r.stderr and "--port" in r.stderr


def _first_lines(args, env, until="Warming up", timeout=60.0) -> str:
    p = subprocess.Popen([sys.executable, "-m", "liveavatar", "serve", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    out = []
    deadline = time.monotonic() + timeout
    try:
        for line in p.stdout:
            out.append(line)
            if until in line or time.monotonic() > deadline:
                break
    finally:
        p.terminate()
        p.wait(10)
    return "".join(out)


def test_binding_beyond_localhost_makes_a_token_printed_once(tmp_path):
    env = {"LIVEAVATAR_CONFIG_DIR": str(tmp_path), "COLUMNS": "250"}
    port = str(free_port())
    first = _first_lines(["--host", "0.0.0.0", "--port", port, "--no-demo"], env)
    assert "/studio?token=" in first and "printed only this once" in first
    token = first.split("/studio?token=")[1].split()[0]
    assert len(token) >= 24 and token in (tmp_path / "server-tokens.json").read_text()
    second = _first_lines(["--host", "0.0.0.0", "--port", port, "--no-demo"], env)
    assert token not in second and "stored in" in second and "?token=<token>" in second


def test_localhost_prints_the_urls_without_tokens(tmp_path):
    out = _first_lines(["--port", str(free_port()), "--no-demo"], {"LIVEAVATAR_CONFIG_DIR": str(tmp_path),
                                                                   "COLUMNS": "250"})
    for what in ("/studio", "/viewer", "/viewer?transparent=1", "/whip/default", "/whep/default"):
        assert what in out
    assert "token" not in out.lower()
    assert not (tmp_path / "server-tokens.json").exists()


def test_a_missing_virtual_camera_is_a_one_line_error_with_advice(tmp_path):
    r = serve("--virtualcam", "--no-demo", "--port", str(free_port()), "--size", "128", timeout=180)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: virtualcam:") and "v4l2loopback" in last


def test_tls_serves_https_and_bad_files_are_one_line_errors(tmp_path):
    import ssl
    import urllib.request
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    r = serve("--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem"))
    assert r.returncode == 2 and "--tls-key" in r.stderr and "no such file" in r.stderr
    r = serve("--tls-cert", str(key), "--tls-key", str(key))
    assert r.returncode == 2 and "PEM" in r.stderr
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # a file, not a pipe nobody reads while we test
    p = subprocess.Popen([sys.executable, "-m", "liveavatar", "serve", "--port", str(port), "--no-demo", "--size", "64",
                          "--tls-cert", str(cert), "--tls-key", str(key)], stdout=log,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "250"})
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/studio", context=ctx, timeout=5) as resp:
                    assert resp.status == 200 and b"LiveAvatar studio" in resp.read()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert f"https://127.0.0.1:{port}/studio" in (tmp_path / "serve.log").read_text()
    finally:
        p.terminate()
        p.wait(10)
        log.close()


def test_default_size_is_512_on_a_gpu_and_256_on_cpu(monkeypatch):
    import torch

    from liveavatar.commands.serve import default_size
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_size(None) == 256 and default_size("cpu") == 256
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_size(None) == 512 and default_size("cuda") == 512
    assert default_size("cpu") == 256      # asked for the CPU on a GPU machine
