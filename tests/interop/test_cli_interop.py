"""`serve`'s interop options as a user types them: mistakes are one-line errors (exit 2)."""
from __future__ import annotations

import socket

import pytest

from tests.server.conftest import free_port
from tests.server.test_cli import serve


def test_bad_vmc_address_and_ports_are_one_line_errors():
    r = serve("--vmc-out", "localhost", "--port", str(free_port()))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "--vmc-out" in r.stderr and "HOST:PORT" in r.stderr
    r = serve("--vmc-in", "70000", "--port", str(free_port()))
    assert r.returncode == 2 and "vmc_in" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_busy_vts_port_is_a_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = serve("--vts-port", str(busy.getsockname()[1]), "--no-demo", "--port", str(free_port()),
                  "--size", "128", env={"LIVEAVATAR_CONFIG_DIR": str(tmp_path)}, timeout=180)
    assert r.returncode == 2, r.stderr[-500:]
    last = r.stderr.strip().splitlines()[-1]
    assert "--vts-port" in last and "cannot listen" in last
