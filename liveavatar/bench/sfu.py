"""`liveavatar bench sfu`: what the service's CPU does as viewers are added, through a local
Janus (`serve --sfu`) against watching directly (WHEP, one shared VP8 encode), plus Janus's
own CPU per viewer and how long a rendered frame takes to reach a viewer each way.

The service runs as its own process (its CPU is read from /proc), the avatar idling (no
camera: rendering, packing and the one encode are the constant part); the viewers are aiortc
clients in this process. While CPU is measured they receive, decrypt and reassemble every frame
but skip decoding it (`counting_decoders`): 25 VP8 decoders in this process would take the
2-core machine from the service under test. The render-to-viewer time is measured apart, with
one viewer that decodes."""
from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import urllib.request
from typing import Any

import numpy as np

from liveavatar.bench import report
from liveavatar.bench.serving import free_port, running_service
from liveavatar.errors import UserError
from liveavatar.interop.janus import JanusSession, JanusTarget, subscribe
from liveavatar.interop.janus_local import LocalJanus, process_cpu_seconds
from liveavatar.server import timecode

#: The service's first seconds (torch, first encodes, the publisher's ICE) cost more than later ones.
SERVICE_WARMUP_S = 10.0


def _get_json(url: str) -> Any:
    import json
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class CountingDecoder:
    """Stands in for aiortc's VP8 decoder: counts complete frames, decodes nothing."""

    def __init__(self) -> None:
        self.frames = 0

    def decode(self, encoded_frame: Any) -> list:
        self.frames += 1
        return []


@contextlib.contextmanager
def counting_decoders() -> Any:
    """Receivers created inside get CountingDecoders for video (listed in the yielded list)."""
    import aiortc.rtcrtpreceiver as receiver
    real = receiver.get_decoder
    made: list[CountingDecoder] = []

    def get_decoder(codec: Any) -> Any:
        if not codec.mimeType.lower().startswith("video/"):
            return real(codec)
        made.append(CountingDecoder())
        return made[-1]

    receiver.get_decoder = get_decoder
    try:
        yield made
    finally:
        receiver.get_decoder = real


class Viewer:
    """One aiortc viewer, via Janus or directly: counts frames; the first one of a run also reads
    each frame's render stamp (timecode strip) to time render -> received."""

    def __init__(self, size: int, stamps: bool) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.size, self.stamps = size, stamps
        self.frames = 0
        self.latency_ms: list[float] = []
        self.janus: JanusSession | None = None
        self.location = ""
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.ensure_future(self._read(track)))
            else:
                self._tasks.append(asyncio.ensure_future(self._drain(track)))

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                self.frames += 1
                if self.stamps:
                    img = frame.to_ndarray(format="rgb24")
                    tc = timecode.read(img[self.size:], timecode.AVATAR_FIELDS)
                    if tc is not None and tc[1]:
                        self.latency_ms.append(float(timecode.age_ms(tc[1])))

    async def _drain(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()

    async def via_janus(self, info: dict) -> Viewer:
        self.janus = await subscribe(JanusTarget(info["url"], info["room"]), info["feed"], self.pc, info.get("pin"))
        return self

    async def direct(self, base: str) -> Viewer:
        import aiohttp
        from aiortc import RTCSessionDescription
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as c, c.post(
                base + "/whep/default?layout=packed", data=self.pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"}) as r:
            if r.status != 201:
                raise UserError(f"WHEP viewer refused: {r.status} {await r.text()}")
            self.location = base + r.headers["Location"]
            answer = await r.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return self

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.janus is not None:
            await self.janus.close()
        if self.location:
            import aiohttp
            with contextlib.suppress(Exception):
                async with aiohttp.ClientSession() as c, c.delete(self.location):
                    pass
        await self.pc.close()


def _published(url: str) -> bool:
    return bool(_get_json(url + "/api/sessions/default/sfu").get("live"))


async def _open(base: str, mode: str, n: int, size: int, stamps: bool) -> list[Viewer]:
    viewers = []
    for _ in range(n):
        v = Viewer(size, stamps=stamps)
        if mode == "janus":
            viewers.append(await v.via_janus(_get_json(base + "/api/sessions/default/sfu")))
        else:
            viewers.append(await v.direct(base))
    return viewers


async def _until(what: str, counts: Any, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while min(counts(), default=0) < want:
        if time.monotonic() > deadline:
            raise UserError(f"{what}: only {counts()} frames after {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def _cpu(base: str, mode: str, n: int, size: int, service_pid: int, janus: LocalJanus,
               seconds: float, warmup_s: float) -> dict:
    viewers: list[Viewer] = []
    try:
        with counting_decoders() as decoders:
            viewers = await _open(base, mode, n, size, stamps=False)
            await _until(f"{mode}, {n} viewers", lambda: [d.frames for d in decoders] if len(decoders) >= n else [],
                         10)
            await asyncio.sleep(warmup_s)
            service, gateway = [], []
            frames0 = sum(d.frames for d in decoders)
            t_prev, s_prev, j_prev = time.monotonic(), process_cpu_seconds(service_pid), janus.cpu_seconds()
            t_end = t_prev + seconds
            while time.monotonic() < t_end:
                await asyncio.sleep(1.0)
                t, s_cpu, j_cpu = time.monotonic(), process_cpu_seconds(service_pid), janus.cpu_seconds()
                service.append(100.0 * (s_cpu - s_prev) / (t - t_prev))
                gateway.append(100.0 * (j_cpu - j_prev) / (t - t_prev))
                t_prev, s_prev, j_prev = t, s_cpu, j_cpu
            fps = (sum(d.frames for d in decoders) - frames0) / seconds / n
        rendered = float(_get_json(base + "/api/sessions/default/state")["stats"].get("fps_out", 0.0))
        return {"service": service, "janus": gateway, "fps": [fps], "rendered": [rendered]}
    finally:
        for v in viewers:
            await v.close()
        await asyncio.sleep(1.0)


async def _latency(base: str, mode: str, size: int, seconds: float, warmup_s: float) -> dict:
    viewers = await _open(base, mode, 1, size, stamps=True)
    try:
        await _until(f"{mode}, latency viewer", lambda: [viewers[0].frames], 10)
        await asyncio.sleep(warmup_s)
        viewers[0].latency_ms.clear()
        await asyncio.sleep(seconds)
        return report.stats(viewers[0].latency_ms)
    finally:
        await viewers[0].close()
        await asyncio.sleep(1.0)


def _glass_to_glass(url: str, seconds: float, warmup_s: float) -> dict[str, dict]:
    """Real Chromium: the studio page sends a fake camera (the demo clip, capture-stamped), and
    the viewer page shows the avatar (picture only) through Janus, then directly (?direct=1);
    the page reads each frame's capture stamp when it presents it."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from liveavatar.bench.e2e import CHROMIUM, _open_viewer, _wait, chromium_args, fake_devices
    from liveavatar.paths import assets_dir
    if not Path(CHROMIUM).exists():
        raise UserError(f"{CHROMIUM} not found: install Debian's chromium, or use --no-glass")
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="liveavatar-sfu-") as tmp_s:
        tmp = Path(tmp_s)
        y4m, wav = fake_devices(assets_dir() / "demo.mp4", tmp)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
                                                        args=chromium_args(y4m, wav),
                                                        viewport={"width": 800, "height": 600})
            try:
                studio = ctx.new_page()
                studio.goto(url + "/studio?preview=0")
                _wait(studio, "window.__studio && window.__studio.publishing", 60, "the studio's camera")
                samples: dict[str, list[float]] = {"janus": [], "direct": []}
                # Alternated, twice each, so a drift in the machine's load does not favour one path.
                for mode in ("janus", "direct", "direct", "janus"):
                    viewer = _open_viewer(ctx, url, "?audio=0" + ("&direct=1" if mode == "direct" else ""), warmup_s)
                    via = viewer.evaluate("window.__viewer.via")
                    if via != mode:
                        raise UserError(f"the viewer page watched {via}, not {mode}")
                    time.sleep(seconds / 2)
                    samples[mode] += viewer.evaluate("window.__viewer.meter.samples.slice()")
                    viewer.close()
                out = {mode: report.stats(v) for mode, v in samples.items()}
            finally:
                ctx.close()
    return out


def run(viewers: list[int], seconds: float = 8.0, size: int = 256, warmup_s: float = 3.0, rounds: int = 2,
        glass: bool = True) -> dict:
    if not viewers or min(viewers) < 1 or max(viewers) > 200:
        raise UserError("--viewers: give counts between 1 and 200, e.g. 1,10,25")
    base_before = report.baseline_ms()
    load = os.getloadavg()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows: list[dict] = []
    janus = LocalJanus(free_port()).start()
    try:
        with tempfile.TemporaryDirectory() as config_dir:
            with running_service(["--device", "cpu", "--size", str(size), "--sfu", f"janus:{janus.url}",
                                  "--log-level", "warning"], env={"LIVEAVATAR_CONFIG_DIR": config_dir},
                                 ready=_published, what="published in Janus", port=port) as service:
                proc = service.proc

                async def all_runs() -> tuple[dict, dict]:
                    await asyncio.sleep(SERVICE_WARMUP_S)
                    # Interleaved, so a change in the machine's load hits both paths alike.
                    cpu: dict[tuple[str, int], dict] = {}
                    for _ in range(rounds):     # samples of every round pooled: rounds even out load swings
                        for n in viewers:
                            for mode in ("janus", "direct"):
                                got = await _cpu(base, mode, n, size, proc.pid, janus, seconds, warmup_s)
                                pooled = cpu.setdefault((mode, n), {k: [] for k in got})
                                for k, v in got.items():
                                    pooled[k].extend(v)
                    for pooled in cpu.values():
                        pooled["service"] = report.stats(pooled["service"])
                        pooled["janus"] = report.stats(pooled["janus"])
                        pooled["fps"] = float(np.median(pooled["fps"]))
                        pooled["rendered"] = float(np.median(pooled["rendered"]))
                    lat = {mode: await _latency(base, mode, size, seconds, warmup_s) for mode in ("janus", "direct")}
                    return cpu, lat
                results, latency = asyncio.run(all_runs())
                g2g = _glass_to_glass(base, 2 * seconds, warmup_s) if glass else {}
    finally:
        janus.cleanup()
    note = f"{size}px avatar idling, packed {2 * size}px wide, VP8; 1 s windows, {rounds} rounds"
    for mode, label in (("janus", "via janus"), ("direct", "direct")):
        for n in viewers:
            r = results[(mode, n)]
            per_frame = 10.0 * r["service"]["median"] / max(r["rendered"], 0.1)   # ms of CPU per frame
            rows.append(report.row(f"service CPU ({n} viewers {label})", r["service"]["median"], r["service"]["p95"],
                                   "% of a core", f"{note}; rendered {r['rendered']:.0f} fps, "
                                   f"{per_frame:.1f} ms CPU a frame; {r['fps']:.1f} fps received per viewer"))
    one = results[("janus", viewers[0])]["service"]["median"]
    most = results[("janus", viewers[-1])]["service"]["median"]
    rows.append(report.row(f"service CPU ratio via janus ({viewers[-1]} / {viewers[0]} viewers)", most / one, None,
                           "x", "goal: at most 1.2"))
    for n in viewers:
        r = results[("janus", n)]["janus"]
        rows.append(report.row(f"Janus CPU ({n} viewers)", r["median"], r["p95"], "% of a core",
                               f"{r['median'] / n:.2f} % per viewer"))
    for mode, label in (("janus", "via janus"), ("direct", "direct")):
        lat = latency[mode]
        rows.append(report.row(f"render to viewer (1 viewer {label})", lat["median"], lat["p95"], "ms",
                               f"render stamp to decoded at an aiortc viewer, n={lat['n']}"))
    for mode, label in (("janus", "via janus"), ("direct", "direct")):
        if mode in g2g:
            g = g2g[mode]
            rows.append(report.row(f"glass-to-glass, picture only ({label})", g["median"], g["p95"], "ms",
                                   f"real Chromium studio camera -> viewer page presenting it, n={g['n']}"))
    base_after = report.baseline_ms()
    rows.append(report.row("baseline workload (start / end)", base_before, base_after, "ms",
                           f"fixed CPU workload: read figures as ratios to it; load {load:.2f} at start"))
    return report.result("sfu", rows)
