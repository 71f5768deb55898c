"""A local Janus (Debian's `janus` package) with a minimal configuration written to a temp dir:
the WebSocket API on one address and port, the VideoRoom plugin only. For tests, the `bench sfu`
benchmark and trying `serve --sfu` on one machine; production runs Janus as its own service
(see the README's "Viewers through Janus")."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from liveavatar.errors import UserError
from liveavatar.runtime.child import stop_process

JANUS = "janus"


def _lib_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/*/janus")) + sorted(glob.glob("/usr/lib/janus"))
    if not found:
        raise UserError("Janus's plugins are not installed (apt-get install janus)")
    return Path(found[0])


class LocalJanus:
    """`janus` on `host:port` (WebSocket API), its config and log in a temp dir; RTP on
    `rtp_ports` (a "min-max" range, for firewalls)."""

    def __init__(self, port: int, host: str = "127.0.0.1", rtp_ports: str = "20000-40000",
                 session_timeout_s: int = 60) -> None:
        self.port, self.host, self.rtp_ports = port, host, rtp_ports
        self.session_timeout_s = session_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="liveavatar-janus-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.dir / "janus.log"

    def write_config(self) -> None:
        lib = _lib_dir()
        # Only the plugin and transport we use are loaded: link them into folders of our own.
        for kind, name in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_websockets.so")):
            (self.dir / kind).mkdir(exist_ok=True)
            target = self.dir / kind / name
            if not target.exists():
                target.symlink_to(lib / kind / name)
        for empty in ("events", "loggers"):
            (self.dir / empty).mkdir(exist_ok=True)
        d = self.dir
        (d / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{d}"
  plugins_folder = "{d}/plugins"
  transports_folder = "{d}/transports"
  events_folder = "{d}/events"
  loggers_folder = "{d}/loggers"
  debug_level = 4
  session_timeout = {self.session_timeout_s}
}}
media: {{
  rtp_port_range = "{self.rtp_ports}"
}}
nat: {{
  ice_ignore_list = "vmnet"
  ignore_mdns = true
}}
plugins: {{ }}
transports: {{ }}
events: {{ broadcast = false }}
loggers: {{ }}
""")
        (d / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")
        (d / "janus.transport.websockets.jcfg").write_text(f"""general: {{
  json = "compact"
  ws = true
  ws_port = {self.port}
  ws_ip = "{self.host}"
  wss = false
}}
admin: {{
  admin_ws = false
  admin_wss = false
}}
""")

    def start(self, timeout: float = 20.0) -> LocalJanus:
        if shutil.which(JANUS) is None:
            raise UserError("janus is not installed (apt-get install janus; scripts/setup.sh --test does it)")
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps writing it)
        self.proc = subprocess.Popen([JANUS, "--config", str(self.dir / "janus.jcfg"),
                                      "--configs-folder", str(self.dir), "--disable-colors"],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"janus exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise UserError(f"janus did not listen on {self.host}:{self.port} within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the janus process so far."""
        if self.proc is None:
            return 0.0
        return process_cpu_seconds(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, 10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its finished children) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
