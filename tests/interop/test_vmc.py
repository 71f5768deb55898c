"""VMC protocol against implementations we did not write: the PyPI `vmcp` package (osc4py3
backend) as receiver of `serve --vmc-out` and as sender into `serve --vmc-in`, and raw
python-osc. Real service (generator, conditioner); perception is the counting stand-in."""
from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from liveavatar.interop import vmc
from liveavatar.server.config import ServerConfig
from liveavatar.types import BONE_INDEX, FP, REST_BONE_ANGLES, Conditioning
from tests.server.conftest import ServerThread, free_port, http, wait_until
from tests.server.fakes import fake_perception_stages

pytestmark = pytest.mark.slow


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VmcpReceiver:
    """vmcp's own receiver on a thread, collecting the events it decodes."""

    def __init__(self, port: int) -> None:
        from vmcp.events import (
            BlendShapeApplyEvent,
            BlendShapeEvent,
            BoneTransformEvent,
            RelativeTimeEvent,
            RootTransformEvent,
            StateEvent,
        )
        from vmcp.facades import on_receive
        from vmcp.osc import OSC
        from vmcp.osc.backend.osc4py3 import as_comthreads as backend
        self.events: list = []
        self._stop = threading.Event()
        self.osc = OSC(backend)
        self.osc.open()
        rx = self.osc.create_receiver("127.0.0.1", port, "liveavatar").open()
        for kind in (RootTransformEvent, BoneTransformEvent, BlendShapeEvent, BlendShapeApplyEvent, StateEvent,
                     RelativeTimeEvent):
            on_receive(rx, kind, self.events.append)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.osc.run()
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.osc.close()


@pytest.fixture(scope="module")
def ports():
    return {"out": free_udp_port(), "in": free_udp_port()}


@pytest.fixture(scope="module")
def receiver(ports):
    r = VmcpReceiver(ports["out"])
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(ports, receiver):
    cfg = ServerConfig(port=free_port(), size=128, demo=False, vmc_out=f"127.0.0.1:{ports['out']}",
                       vmc_in=ports["in"])
    srv = ServerThread(cfg, fake_perception_stages(cfg)).start()
    yield srv
    srv.stop()


def test_vmc_out_decoded_by_vmcp(server, receiver):
    from vmcp.events import (
        BlendShapeApplyEvent,
        BlendShapeEvent,
        BoneTransformEvent,
        RelativeTimeEvent,
        RootTransformEvent,
        StateEvent,
    )
    wait_until(lambda: sum(isinstance(e, BlendShapeApplyEvent) for e in list(receiver.events)) >= 30,
               timeout=30, what="30 VMC frames at vmcp")
    events = list(receiver.events)
    kinds = {type(e) for e in events}
    assert {RootTransformEvent, BoneTransformEvent, BlendShapeEvent, StateEvent, RelativeTimeEvent} <= kinds
    bones = {e.joint.value for e in events if isinstance(e, BoneTransformEvent)}
    assert {"Hips", "Spine", "Neck", "Head", "LeftUpperArm", "RightLowerArm", "LeftUpperLeg"} <= bones
    for e in events:
        if isinstance(e, BoneTransformEvent):
            q = e.rotation
            assert math.isclose(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w, 1.0, rel_tol=1e-4)
    names = {e.key for e in events if isinstance(e, BlendShapeEvent)}
    assert set(vmc.VRM_BLENDSHAPES) <= names
    assert not names & set(vmc.ARKIT_BLENDSHAPES)  # ARKit names only with --vmc-arkit
    times = [e.delta for e in events if isinstance(e, RelativeTimeEvent)]
    assert times == sorted(times) and times[-1] > times[0]
    # Sent at the output rate (30 fps): a second brings about 30 frames.
    n0 = sum(isinstance(e, BlendShapeApplyEvent) for e in list(receiver.events))
    time.sleep(1.0)
    n1 = sum(isinstance(e, BlendShapeApplyEvent) for e in list(receiver.events))
    assert 10 <= n1 - n0 <= 40


def test_vmc_out_single_messages_and_arkit_to_raw_python_osc():
    """Receivers that take no bundles: every message its own datagram (python-osc's server)."""
    got: list[tuple[str, tuple]] = []
    disp = Dispatcher()
    disp.set_default_handler(lambda addr, *args: got.append((addr, args)))
    srv = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sender = vmc.VmcSender("127.0.0.1", srv.server_address[1], bundle=False, arkit=True,
                           emotions=lambda: ("neutral", "happy", "sad")).start()
    try:
        c = Conditioning.neutral(n_emotions=3)
        c.emotion[:] = (0.2, 0.8, 0.0)
        c.face[FP["blink_left"]] = 1.0
        c.bone_angles[BONE_INDEX["upper_arm_l"]] = math.pi  # the character's left arm straight up
        sender.offer(c)
        wait_until(lambda: any(a == "/VMC/Ext/Blend/Apply" for a, _ in got), timeout=5, what="a frame")
    finally:
        sender.stop()
        srv.shutdown()
    blend = {args[0]: args[1] for a, args in got if a == "/VMC/Ext/Blend/Val"}
    assert blend["Joy"] == pytest.approx(0.8) and blend["Sorrow"] == 0.0 and blend["Blink_L"] == 1.0
    assert blend["eyeBlinkLeft"] == 1.0 and "jawOpen" in blend
    bones = {args[0]: args[1:] for a, args in got if a == "/VMC/Ext/Bone/Pos"}
    # T-pose arm (pointing to the avatar's left, -x) turned up: -90 degrees about +z.
    qx, qy, qz, qw = bones["LeftUpperArm"][3:]
    assert (qx, qy) == (0.0, 0.0) and 2 * math.atan2(qz, qw) == pytest.approx(-math.pi / 2, abs=1e-5)
    assert [a for a, _ in got][-1] == "/VMC/Ext/Blend/Apply"


def _bone_err(angle: float, target: float) -> float:
    return abs(math.atan2(math.sin(angle - target), math.cos(angle - target)))


def test_vmc_in_from_vmcp_sender_drives_the_avatar_and_idles_when_it_stops(server, ports, receiver):
    from vmcp.osc.typing import Message
    from vmcp.protocol import (
        blendshape,
        blendshape_apply,
        bone_transform,
        root_transform,
    )
    from vmcp.typing import BlendShapeKey as AbstractKey
    from vmcp.typing import Bone, CoordinateVector, Quaternion

    class Key(AbstractKey):
        BLINK_L = "Blink_L"
        A = "A"

    s = server.engine.sessions["default"]
    seen: list[Conditioning] = []
    tap = seen.append
    s.tick_taps.append(tap)
    try:
        if True:  # osc4py3 is one per process: the sender shares the receiver fixture's OSC
            out = receiver.osc.create_sender("127.0.0.1", ports["in"], "tracker").open()
            arm_up = Quaternion(0.0, 0.0, -math.sin(math.pi / 4), math.cos(math.pi / 4))
            t_end = time.monotonic() + 4.0
            while time.monotonic() < t_end:
                out.send((Message(*root_transform(CoordinateVector(0.0, 0.0, 0.0), Quaternion.identity())),
                          Message(*bone_transform(Bone.LEFT_UPPER_ARM, CoordinateVector.identity(), arm_up)),
                          Message(*blendshape(Key.BLINK_L, 1.0)), Message(*blendshape(Key.A, 0.9)),
                          Message(*blendshape_apply())))
                time.sleep(1 / 30)
                if time.monotonic() > t_end - 2.0 and len(seen) > 0 and s.ingest_kind == "vmc":
                    break
            assert s.ingest_kind == "vmc" and server.call(_state(s))["ingest"] == "vmc"
            # Hotkeys still fuse on top of the tracker's stream.
            status, _ = http(server.url + "/api/sessions/default/emotion", "POST", {"name": "happy", "mode": "hold",
                                                                                    "hold_s": 3})
            assert status == 200
            for _ in range(20):
                out.send((Message(*bone_transform(Bone.LEFT_UPPER_ARM, CoordinateVector.identity(), arm_up)),
                          Message(*blendshape(Key.BLINK_L, 1.0)), Message(*blendshape(Key.A, 0.9)),
                          Message(*blendshape_apply())))
                time.sleep(1 / 30)
        c = seen[-1]
        assert _bone_err(float(c.bone_angles[BONE_INDEX["upper_arm_l"]]), math.pi) < 0.3  # arm up
        assert c.face[FP["blink_left"]] > 0.7
        assert c.visemes[1] > 0.3  # "A" lip sync from the tracker
        emotions = list(s.conditioner.emotions)
        assert c.emotion[emotions.index("happy")] > 0.3
        assert server.call(_stats(server))["vmc_in"]["frames"] > 20
        # The stream stops: the session drops back and the avatar returns to its idle pose.
        wait_until(lambda: s.ingest_kind == "", timeout=10, what="the VMC source to be noticed gone")
        wait_until(lambda: _bone_err(float(seen[-1].bone_angles[BONE_INDEX["upper_arm_l"]]),
                                     float(REST_BONE_ANGLES[BONE_INDEX["upper_arm_l"]])) < 0.5,
                   timeout=15, what="the idle pose")
    finally:
        s.tick_taps.remove(tap)


def test_vmc_in_raw_python_osc_messages_and_garbage(server, ports):
    s = server.engine.sessions["default"]
    before = server.call(_stats(server))["vmc_in"]
    client = SimpleUDPClient("127.0.0.1", ports["in"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.sendto(b"\x00not osc at all", ("127.0.0.1", ports["in"]))
        client.send_message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.0, 0.0, "x", 0.0, 0.0, 1.0])  # wrong type
        for _ in range(10):
            client.send_message("/VMC/Ext/Bone/Pos", ["Head", 0.0, 0.0, 0.0, 0.0, 0.2588, 0.0, 0.9659])
            client.send_message("/VMC/Ext/Blend/Val", ["Blink_R", 0.5])
            client.send_message("/VMC/Ext/Blend/Apply", [])
            time.sleep(0.02)
        wait_until(lambda: server.call(_stats(server))["vmc_in"]["frames"] >= before["frames"] + 10, timeout=5,
                   what="ten frames from single messages")
        after = server.call(_stats(server))["vmc_in"]
        assert after["bad_packets"] >= before["bad_packets"] + 2
        status, body = http(server.url + "/health")
        assert status == 200
        assert s.worker.alive
    finally:
        sock.close()


def test_vmc_head_and_bones_round_trip_through_the_conditioners_retargeting():
    """Our own mapping, both ways: Conditioning -> VMC -> the Cues a camera would give ->
    the conditioner's retargeting yields the same bones and head (mirrored or not)."""
    from liveavatar.conditioning.retarget import PoseRetargeter, head_angles
    rng = np.random.default_rng(7)
    for mirror in (False, True):
        c = Conditioning.neutral()
        c.bone_angles = (REST_BONE_ANGLES + rng.uniform(-0.6, 0.6, len(REST_BONE_ANGLES))).astype(np.float32)
        c.head = rng.uniform(-0.4, 0.4, 3).astype(np.float32)
        frame = vmc.frame_from_conditioning(c, ("neutral",), 0.0)
        state = vmc.VmcState(bones={name: q for name, _, q in vmc.vmc_bones(frame)})
        cues = vmc.cues_from_vmc(state, 1, 1, mirror)
        r = PoseRetargeter()
        r.run(cues.pose.landmarks, 1.0, mirror, 0.5)
        assert np.abs(np.angle(np.exp(1j * (r.bones - c.bone_angles)))).max() < 1e-4
        head = np.zeros(3, np.float32)
        head_angles(cues.expression, mirror, head)
        assert np.abs(head - c.head).max() < 1e-4


def test_vmc_out_rejects_a_bad_address():
    from liveavatar.errors import UserError
    with pytest.raises(UserError, match="HOST:PORT"):
        vmc.parse_host_port("localhost", "--vmc-out")
    with pytest.raises(UserError, match="HOST:PORT"):
        vmc.parse_host_port("localhost:99999", "--vmc-out")


async def _state(s):
    return s.state()


async def _stats(server):
    from liveavatar.interop.service import INTEROP
    return server.app[INTEROP].stats()
