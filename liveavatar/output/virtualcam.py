"""Virtual camera sink: the avatar as a webcam other apps (OBS, Zoom, Meet) can pick.

pyvirtualcam drives OBS Virtual Camera on Windows and macOS and v4l2loopback on Linux. When none
is present we say exactly what to install instead of surfacing pyvirtualcam's RuntimeError.
"""
from __future__ import annotations

import sys
from typing import Any

from liveavatar.errors import UserError
from liveavatar.output.base import Compositor, FrameSink
from liveavatar.types import RenderedFrame


def install_advice(platform: str = sys.platform) -> str:
    if platform.startswith("linux"):
        return ("install v4l2loopback and load it: `sudo apt install v4l2loopback-dkms && "
                "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=LiveAvatar`")
    if platform == "darwin":
        return ("install OBS Studio 30 or newer and click Start Virtual Camera once so macOS "
                "registers its camera extension")
    return ("install OBS Studio 26 or newer (it ships OBS Virtual Camera) and click "
            "Start Virtual Camera once")


class VirtualCamSink(FrameSink):
    """RGB frames at the output rate to the system's virtual camera."""

    kind = "virtualcam"

    def __init__(self, width: int, height: int, fps: int = 30,
                 background: tuple[int, int, int] = (0, 255, 0), backend: str | None = None) -> None:
        super().__init__()
        if width <= 0 or height <= 0:
            raise UserError(f"virtual camera size {width}x{height} must be positive")
        self.width, self.height, self.fps = width, height, fps
        self.backend = backend
        self._compositor = Compositor(background)
        self._camera: Any = None       # pyvirtualcam.Camera once open
        self.device = ""

    def _open(self) -> None:
        import pyvirtualcam
        try:
            self._camera = pyvirtualcam.Camera(self.width, self.height, self.fps,
                                               fmt=pyvirtualcam.PixelFormat.RGB, backend=self.backend)
        except RuntimeError as e:  # pyvirtualcam's only signal for "no backend / no device"
            detail = str(e).splitlines()[0] if str(e) else "no backend"
            raise UserError(f"no virtual camera available ({detail}); {install_advice()}") from e
        self.device = self._camera.device

    def _write(self, frame: RenderedFrame) -> None:
        rgb = self._compositor.over(frame.rgba)
        if rgb.shape[0] != self.height or rgb.shape[1] != self.width:
            import cv2
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._camera.send(rgb)

    def _close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None
