"""`liveavatar bench interop`: what the VTuber interop costs and how fast it acts.

- VMC out, per output tick: the render thread's share (`VmcSender.offer`: copy into the slot)
  and the sender thread's (build the OSC frame and send it), bundled, single messages, and with
  the ARKit names.
- VMC in, receive to render: a real `liveavatar serve --vmc-in` fed a moving VMC stream at
  30 fps; the service's own capture_to_render timer, whose "capture" for a VMC frame is the
  arrival of the datagram that completed it.
- VTS hotkey to pixel: HotkeyTriggerRequest round trips against `serve --vts-port`; the answer
  comes once a frame showing the hotkey has been rendered (as the HTTP API's state does).
"""
from __future__ import annotations

import asyncio
import json
import math
import socket
import tempfile
import threading
import time
import urllib.request

from liveavatar.bench import report
from liveavatar.bench.serving import free_port, running_service
from liveavatar.errors import UserError
from liveavatar.types import BONE_INDEX, Conditioning

WARMUP = 50


def vmc_out_rows(frames: int = 600) -> list[dict]:
    from liveavatar.interop.vmc import VmcSender
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    rows = []
    try:
        for label, bundle, arkit in (("bundled", True, False), ("single messages", False, False),
                                     ("bundled + ARKit", True, True)):
            sender = VmcSender("127.0.0.1", sink.getsockname()[1], bundle=bundle, arkit=arkit,
                               emotions=lambda: ("neutral", "happy", "sad", "angry", "surprised", "excited", "shy"))
            sender.start()
            offer_us = []
            try:
                for i in range(frames + WARMUP):
                    c = Conditioning.neutral()
                    c.bone_angles[BONE_INDEX["upper_arm_l"]] += 0.5 * math.sin(i / 10)
                    t0 = time.perf_counter()
                    sender.offer(c)
                    offer_us.append((time.perf_counter() - t0) * 1e6)
                    time.sleep(1 / 30)
                    while True:  # drain the receiver so the socket never fills
                        try:
                            sink.recv(65536)
                        except BlockingIOError:
                            break
            finally:
                sender.stop()
            o, b = report.stats(offer_us, WARMUP), report.stats(list(sender.build_us), WARMUP // 2)
            rows.append(report.row(f"VMC out, render thread ({label})", o["median"], o["p95"], "us",
                                   "copy into the sender's slot"))
            rows.append(report.row(f"VMC out, sender thread ({label})", b["median"], b["p95"], "us",
                                   "build the OSC frame and send it"))
    finally:
        sink.close()
    return rows


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _vmc_stream(port: int, seconds: float) -> int:
    from liveavatar.interop.vmc import osc_bundle, osc_message
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        a = 0.8 * math.sin(n / 15)
        msgs = [osc_message("/VMC/Ext/Bone/Pos", "LeftUpperArm", 0.0, 0.0, 0.0, 0.0, 0.0, math.sin(a / 2),
                            math.cos(a / 2)),
                osc_message("/VMC/Ext/Blend/Val", "A", 0.5 + 0.5 * math.sin(n / 5)),
                osc_message("/VMC/Ext/Blend/Apply")]
        sock.sendto(osc_bundle(msgs), ("127.0.0.1", port))
        n += 1
        time.sleep(1 / 30)
    sock.close()
    return n


async def _vts_hotkeys(base: str, vts_port: int, count: int) -> list[float]:
    import aiohttp
    head = {"apiName": "VTubeStudioPublicAPI", "apiVersion": "1.0"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{vts_port}") as ws:
        async def ask(kind: str, data: dict) -> dict:
            await ws.send_json({**head, "requestID": kind, "messageType": kind, "data": data})
            return json.loads((await ws.receive()).data)

        plugin = {"pluginName": "LiveAvatarBench", "pluginDeveloper": "liveavatar"}
        token_reply = asyncio.ensure_future(ask("AuthenticationTokenRequest", plugin))
        for _ in range(100):  # what the studio page's prompt does when the streamer clicks Allow
            pending = (await asyncio.to_thread(_get, base + "/api/vts/approvals"))["pending"]
            if pending:
                await asyncio.to_thread(_post, base + f"/api/vts/approvals/{pending[0]['id']}", {"allow": True})
                break
            await asyncio.sleep(0.05)
        token = (await token_reply)["data"]["authenticationToken"]
        auth = await ask("AuthenticationRequest", {**plugin, "authenticationToken": token})
        if not auth["data"].get("authenticated"):
            raise UserError("the bench plugin was not authenticated")
        rtts = []
        for _ in range(count):
            t0 = time.perf_counter()
            reply = await ask("HotkeyTriggerRequest", {"hotkeyID": "emotion.happy"})
            rtts.append((time.perf_counter() - t0) * 1e3)
            if reply["messageType"] != "HotkeyTriggerResponse":
                raise UserError(f"hotkey refused: {reply['data']}")
            await asyncio.sleep(0.3)
        return rtts


def run(seconds: float = 20.0, size: int = 256, hotkeys: int = 40) -> dict:
    base_before = report.baseline_ms()
    rows = vmc_out_rows()
    port, vmc_port, vts_port = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as config_dir, \
            running_service(["--size", str(size), "--vmc-in", str(vmc_port), "--vts-port", str(vts_port),
                             "--log-level", "warning"], env={"LIVEAVATAR_CONFIG_DIR": config_dir}, port=port):
        sent = [0]
        streamer = threading.Thread(target=lambda: sent.__setitem__(0, _vmc_stream(vmc_port, seconds)))
        streamer.start()
        streamer.join()
        st = _get(base + "/api/sessions/default/state")["stats"]
        rows.append(report.row("VMC in, receive to render", st["ms"].get("capture_to_render", float("nan")),
                               st["ms_p95"].get("capture_to_render"), "ms",
                               f"{sent[0]} frames at 30 fps, {size}px, service timer"))
        rtts = asyncio.run(_vts_hotkeys(base, vts_port, hotkeys))
        h = report.stats(rtts, 3)
        rows.append(report.row("VTS hotkey to rendered frame", h["median"], h["p95"], "ms",
                               f"HotkeyTriggerRequest round trip, n={h['n']}"))
    base_after = report.baseline_ms()
    rows.append(report.row("baseline workload (start / end)", base_before, base_after, "ms",
                           "fixed CPU workload: read figures as ratios to it"))
    return report.result("interop", rows)
