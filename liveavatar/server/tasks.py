"""The service's background tasks on the loop: startup (warm-up, the default session and the
outputs `serve` asked for, the demo fallback), stats (1 Hz), overlay cues (10 Hz), loop lag, and
the app's startup / shutdown hooks that run them."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from liveavatar.errors import UserError
from liveavatar.interop import service as interop
from liveavatar.paths import assets_dir
from liveavatar.server.events import cues_overlay
from liveavatar.server.feeds import start_feed
from liveavatar.server.state import CONFIG, ENGINE, SERVICE

log = logging.getLogger("liveavatar.server")


async def stats_task(app: web.Application) -> None:
    eng = app[ENGINE]
    while True:
        await asyncio.sleep(1.0)
        stats = {}
        for sid, s in list(eng.sessions.items()):
            st = s.stats()
            stats[sid] = st
            s.publish_event(st)
        app[SERVICE].stats = stats
        eng.revive_workers()
        await eng.reap_idle()


async def loop_lag_task(app: web.Application, period_s: float = 0.05) -> None:
    """How late the event loop wakes up. Everything WebRTC does runs on it, so a stall here
    shows up as jitter at every viewer (and their browsers buffer more to ride it out)."""
    timer = app[ENGINE].timer
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(period_s)
        timer.record("loop_lag", max(0.0, loop.time() - t0 - period_s) * 1e3)


async def cues_task(app: web.Application) -> None:
    eng = app[ENGINE]
    last: dict[str, int] = {}
    while True:
        await asyncio.sleep(0.1)
        for sid, s in list(eng.sessions.items()):
            cues = s.last_cues
            if s.cue_subscribers > 0 and cues is not None and last.get(sid) != cues.seq:
                last[sid] = cues.seq
                s.publish_event(cues_overlay(cues))


async def startup_task(app: web.Application) -> None:
    eng = app[ENGINE]
    cfg = app[CONFIG]
    try:
        await eng.start()
    except Exception as e:
        log.error("warm-up failed: %s", e)
        return
    try:
        s = await eng.get_or_create("default")
        if cfg.source is not None:
            eng.drive_from_file(s, cfg.source)
        for name, url in app[SERVICE].startup_feeds:
            try:
                if name == "mpegts":
                    await start_feed(app, s, url)
                elif name == "virtualcam":
                    from liveavatar.output.virtualcam import VirtualCamSink
                    sink = VirtualCamSink(cfg.size, cfg.size, cfg.fps)
                    await asyncio.get_running_loop().run_in_executor(eng.pool, sink.start)
                    s.replace_sink("virtualcam", sink)
            except (UserError, ImportError) as e:
                log.error("%s output not started: %s", name, e)
                app[SERVICE].startup_errors.append(f"{name}: {e}")
        try:  # VMC out/in, the VTube Studio-style API (serve --vmc-out/--vmc-in/--vts-port)
            await interop.start_for(app, s)
        except UserError as e:
            log.error("interop not started: %s", e)
            app[SERVICE].startup_errors.append(str(e))
    except Exception as e:  # e.g. perception cannot start: `serve` reports it and exits
        log.exception("the default session could not start")
        app[SERVICE].startup_errors.append(f"default session: {e}")
        return
    finally:
        app[SERVICE].outputs_ready.set()
    if cfg.source is None and cfg.demo:
        await asyncio.sleep(cfg.demo_after_s)
        demo = assets_dir() / "demo.mp4"
        if not s.ever_had_camera and s.file_driver is None and "default" in eng.sessions:
            if demo.exists():
                log.info("no camera yet: playing the demo clip %s (turn off with --no-demo)", demo)
                eng.drive_from_file(s, demo)
            else:
                log.warning("no demo clip at %s", demo)


async def on_startup(app: web.Application) -> None:
    app[ENGINE].loop = asyncio.get_running_loop()
    app[SERVICE].tasks = [asyncio.ensure_future(startup_task(app)), asyncio.ensure_future(stats_task(app)),
                   asyncio.ensure_future(cues_task(app)), asyncio.ensure_future(loop_lag_task(app))]


async def on_shutdown(app: web.Application) -> None:
    service = app[SERVICE]
    for t in service.tasks:
        t.cancel()
    for peer in list(service.peers.values()):
        await peer.close()
    service.peers.clear()
    await app[ENGINE].stop()
