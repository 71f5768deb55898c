"""VMC out carries real tracking: the real stages (MediaPipe in its child process) on a real clip
of a person (../shared/media/faces/d3.mp4: she turns her head and makes faces), `--vmc-out` to a
raw python-osc receiver. The head bone and the bones move with the person, and the face
blendshapes are not all zero."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from liveavatar.server.config import ServerConfig
from liveavatar.server.stages import real_stages
from tests.media import shared
from tests.server.conftest import ServerThread, free_port, wait_until

pytestmark = pytest.mark.slow


def test_vmc_out_follows_a_real_person():
    bones: dict[str, list] = {}
    blends: dict[str, list] = {}
    frames = [0]

    def on_bone(addr, name, *args):
        bones.setdefault(name, []).append(args[3:7])

    def on_blend(addr, name, value):
        blends.setdefault(name, []).append(value)

    disp = Dispatcher()
    disp.map("/VMC/Ext/Bone/Pos", on_bone)
    disp.map("/VMC/Ext/Blend/Val", on_blend)
    disp.map("/VMC/Ext/Blend/Apply", lambda *a: frames.__setitem__(0, frames[0] + 1))
    rx = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    cfg = ServerConfig(port=free_port(), size=128, demo=False, source=shared("faces/d3.mp4"),
                       vmc_out=f"127.0.0.1:{rx.server_address[1]}")
    server = ServerThread(cfg, real_stages(cfg)).start(timeout=240)
    try:
        s = server.engine.sessions["default"]
        wait_until(lambda: s.state()["conditioning"]["face_present"] > 0.5, timeout=120, what="a tracked face")
        start, first_head = frames[0], len(bones.get("Head", []))
        time.sleep(6.0)
        assert frames[0] - start > 30  # at the output rate
    finally:
        server.stop()
        rx.shutdown()
    head = np.array(bones["Head"][first_head:])
    assert np.abs(head[:, :3]).max() > 0.01  # the head turns and nods with hers
    # and moves over time: sin(3.4 degrees / 2) of peak-to-peak on some axis over six seconds
    # (she gives about 0.25)
    assert np.ptp(head[:, :3], axis=0).max() > 0.03, np.ptp(head[:, :3], axis=0)
    face = {n: max(v[-100:]) for n, v in blends.items() if n in ("Blink_L", "Blink_R", "A", "I", "U", "E", "O")}
    assert max(face.values()) > 0.05, face
