"""Start a real OBS Studio 29 headless (Xvfb + llvmpipe) with websocket auth on, for tests.

Facts this relies on are in /work/shared/notes/obs-headless.md: OBS 29 keeps the websocket
settings in global.ini, needs its first-run wizard switched off, loads scripts named in the
scene collection's "modules" block, and shuts down cleanly on SIGINT. Everything is started and
stopped by PID; nothing else on the machine is touched.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

COLLECTION = "LiveAvatarTest"
PROFILE = "LiveAvatarTest"
SCENE = "Scene"
OBS_29_0_2 = 486539266  # global.ini LastVersion for 29.0.2: stops the "what's new" dialogs


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(home: Path, port: int, password: str, width: int, height: int,
                  scripts: list[Path], settings: dict[Path, dict], extra_scenes: list[str]) -> None:
    cfg = home / ".config" / "obs-studio"
    (cfg / "basic" / "profiles" / PROFILE).mkdir(parents=True, exist_ok=True)
    (cfg / "basic" / "scenes").mkdir(parents=True, exist_ok=True)
    (cfg / "global.ini").write_text(
        f"[General]\nFirstRun=true\nLastVersion={OBS_29_0_2}\nPre19Defaults=false\nPre21Defaults=false\n"
        "Pre23Defaults=false\nPre24.1Defaults=false\n\n"
        f"[Basic]\nProfile={PROFILE}\nProfileDir={PROFILE}\nSceneCollection={COLLECTION}\n"
        f"SceneCollectionFile={COLLECTION}\n\n"
        # The preview costs ~a quarter core under llvmpipe; screenshots work without it.
        "[BasicWindow]\nPreviewEnabled=false\n\n"
        f"[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={port}\nAlertsEnabled=false\n"
        f"AuthRequired=true\nServerPassword={password}\n")
    (cfg / "basic" / "profiles" / PROFILE / "basic.ini").write_text(
        f"[General]\nName={PROFILE}\n\n[Video]\nBaseCX={width}\nBaseCY={height}\nOutputCX={width}\n"
        f"OutputCY={height}\nFPSType=1\nFPSInt=30\n\n[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n")
    scenes = [SCENE, *extra_scenes]
    collection = {
        "name": COLLECTION, "current_scene": SCENE, "current_program_scene": SCENE,
        "scene_order": [{"name": s} for s in scenes],
        "sources": [{"id": "scene", "versioned_id": "scene", "name": s, "settings": {}}
                    for s in scenes],
        "modules": {"scripts-tool": [{"path": str(p), "settings": settings.get(p, {})}
                                     for p in scripts]},
    }
    (cfg / "basic" / "scenes" / f"{COLLECTION}.json").write_text(json.dumps(collection))


@dataclass
class HeadlessObs:
    """One Xvfb + OBS pair. `start()` returns when the websocket answers GetVersion."""
    workdir: Path
    width: int = 1280
    height: int = 720
    scripts: list[Path] = field(default_factory=list)
    #: per script: its saved settings (what script_load receives), e.g. hotkey bindings
    script_settings: dict[Path, dict] = field(default_factory=dict)
    extra_scenes: list[str] = field(default_factory=list)
    port: int = 0
    password: str = ""
    xvfb: subprocess.Popen | None = None
    obs: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def log_dir(self) -> Path:
        return self.home / ".config" / "obs-studio" / "logs"

    def collection(self) -> dict:
        """The scene collection file as OBS last saved it."""
        path = self.home / ".config" / "obs-studio" / "basic" / "scenes" / f"{COLLECTION}.json"
        return json.loads(path.read_text())

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.txt")))

    def start(self, ready_timeout: float = 60.0) -> HeadlessObs:
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        _write_config(self.home, self.port, self.password, self.width, self.height,
                      self.scripts, self.script_settings, self.extra_scenes)
        # -displayfd lets Xvfb pick a free display number and tell us which.
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
             "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            display = f.readline().strip()
        if not display:
            self.stop()
            raise RuntimeError("Xvfb did not report a display number")
        # opencv-python, once imported, points QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt
        # plugins, which crash OBS's Qt: give OBS none of our process's Qt settings.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        env = {**inherited, "DISPLAY": f":{display}", "HOME": str(self.home),
               "XDG_CONFIG_HOME": str(self.home / ".config"), "LIBGL_ALWAYS_SOFTWARE": "1",
               "QT_QPA_PLATFORM": "xcb"}
        self.obs = subprocess.Popen(
            ["obs", "--multi", "--disable-missing-files-check", "--collection", COLLECTION,
             "--profile", PROFILE, "--scene", SCENE],
            env=env, cwd=self.workdir, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "obs-stderr.txt", "wb"))
        self._wait_ready(ready_timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import obsws_python as obsws
        logging.getLogger("obsws_python").setLevel(logging.CRITICAL)
        deadline = time.monotonic() + timeout
        while True:
            if self.obs.poll() is not None:
                stderr = (self.workdir / "obs-stderr.txt").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"OBS exited with {self.obs.returncode}:\n{stderr[-2000:]}"
                                   f"\n{self.log_text()[-2000:]}")
            try:
                with obsws.ReqClient(host="127.0.0.1", port=self.port, password=self.password,
                                     timeout=3) as c:
                    c.get_version()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("OBS websocket did not answer in time") from None
                time.sleep(0.3)

    def client(self):
        import obsws_python as obsws
        return obsws.ReqClient(host="127.0.0.1", port=self.port, password=self.password, timeout=10)

    def stop(self) -> None:
        # SIGINT is OBS's clean shutdown; escalate only if it hangs.
        for proc, sig in ((self.obs, signal.SIGINT), (self.xvfb, signal.SIGTERM)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
