"""VirtualCamSink: on this machine (no v4l2loopback) the real error path, with install advice;
with a recording stand-in for pyvirtualcam, the frames our sink produces."""
from __future__ import annotations

import time

import numpy as np
import pytest

from liveavatar.errors import UserError
from liveavatar.output.virtualcam import VirtualCamSink, install_advice
from tests.output.frames import cutout, over, rendered


def test_missing_backend_says_what_to_install():
    sink = VirtualCamSink(640, 480, 30)
    with pytest.raises(UserError) as err:
        sink.start()
    msg = str(err.value)
    assert "\n" not in msg
    assert "v4l2loopback" in msg and "modprobe" in msg
    assert not sink.running


@pytest.mark.parametrize("platform, needle", [("linux", "v4l2loopback-dkms"),
                                              ("darwin", "OBS Studio 30"),
                                              ("win32", "OBS Virtual Camera")])
def test_advice_per_platform(platform, needle):
    assert needle in install_advice(platform)


class RecordingCamera:
    """Stands in for pyvirtualcam.Camera: keeps what it is sent."""
    instances: list[RecordingCamera] = []

    def __init__(self, width, height, fps, fmt=None, backend=None):
        self.width, self.height, self.fps, self.fmt = width, height, fps, fmt
        self.device, self.frames, self.closed = "/dev/video-test", [], False
        RecordingCamera.instances.append(self)

    def send(self, frame):
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


def test_frames_reach_the_camera_composited_and_resized(monkeypatch):
    import pyvirtualcam
    monkeypatch.setattr(pyvirtualcam, "Camera", RecordingCamera)
    rgba = cutout("astronaut.png", (320, 240))
    sink = VirtualCamSink(320, 240, 30, background=(0, 0, 0))
    with sink:
        sink.send(rendered(rgba, 0, 1))
        while sink.stats()["written"] < 1:
            time.sleep(0.01)
        sink.send(rendered(cutout("astronaut.png", (640, 480)), 1, 2))
    cam = RecordingCamera.instances[-1]
    assert cam.closed and cam.fmt == pyvirtualcam.PixelFormat.RGB and sink.device == "/dev/video-test"
    assert len(cam.frames) == 2
    assert np.abs(cam.frames[0].astype(int) - over(rgba, (0, 0, 0))).max() <= 1
    # The 640x480 frame was scaled to the camera's size, not cropped.
    assert np.abs(cam.frames[1].astype(int) - over(rgba, (0, 0, 0))).mean() < 4


def test_serve_virtualcam_without_backend_says_what_to_install(tmp_path):
    """`liveavatar serve --virtualcam` on a machine without v4l2loopback: the service still
    serves, and tells the user what to install."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.obs.headless import free_port

    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "liveavatar.cli", "serve", "--port", str(free_port()),
                                 "--size", "128", "--no-demo", "--virtualcam"],
                                cwd=repo, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while "virtualcam" not in log.read_text(errors="replace") and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text(errors="replace")
                time.sleep(0.3)
            time.sleep(1)  # let the console line follow the log line
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
    text = " ".join(log.read_text(errors="replace").split())  # undo console line wrapping
    assert "no virtual camera available" in text
    assert "sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback" in text
    assert "Traceback" not in text
