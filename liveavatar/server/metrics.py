"""Prometheus metrics, read from the engine at scrape time (nothing is added to the hot path)."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from liveavatar.server.engine import Engine


class EngineCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Any:
        eng = self.engine
        up = GaugeMetricFamily("liveavatar_ready", "1 once the generator is warmed up",
                               labels=["generator", "device"])
        up.add_metric([str(getattr(eng.generator, "name", eng.cfg.generator)),
                       str(getattr(eng.generator, "device", "none"))], 1.0 if eng.ready else 0.0)
        yield up
        yield GaugeMetricFamily("liveavatar_sessions", "Live sessions", value=len(eng.sessions))
        timings = eng.timer.summary()
        for key, name, doc in (("render", "liveavatar_render_batch_ms", "Generator batch render time (ms)"),
                               ("loop_lag", "liveavatar_event_loop_lag_ms", "How late the asyncio loop wakes (ms)")):
            g = GaugeMetricFamily(name, doc, labels=["quantile"])
            if key in timings:
                g.add_metric(["0.5"], timings[key]["median_ms"])
                g.add_metric(["0.95"], timings[key]["p95_ms"])
            yield g
        yield CounterMetricFamily("liveavatar_render_ticks_skipped",
                                  "Output ticks skipped because rendering fell behind",
                                  value=eng.ticker_skipped())
        cap = eng.governor.stats()["tracking_cap_fps"]
        yield GaugeMetricFamily("liveavatar_tracking_cap_fps", "Tracking rate cap while the avatar runs late "
                                "(0: uncapped)", value=cap or 0.0)
        yield CounterMetricFamily("liveavatar_tracking_slowdowns", "Seconds in which tracking was slowed so "
                                  "the avatar kept its frame rate", value=eng.governor.slowdowns)
        yield CounterMetricFamily("liveavatar_render_errors", "Output ticks whose render raised (frame skipped)",
                                  value=eng.render_loop.errors if eng.render_loop else 0)
        yield CounterMetricFamily("liveavatar_perception_worker_restarts",
                                  "Perception worker threads found dead and replaced", value=eng.worker_restarts)
        counters = getattr(eng.generator, "worker_counters", None)   # serve --workers: the round trips
        if counters is not None:
            frames = CounterMetricFamily("liveavatar_worker_frames", "Generator worker requests by outcome "
                                         "(sent, replies, conflated, stale_dropped, idle_frames, failed, abandoned)",
                                         labels=["outcome"])
            for outcome, n in counters().items():
                frames.add_metric([outcome], n)
            yield frames
        # Soak tests watch these stay flat (a leak of tasks or threads shows here first).
        yield GaugeMetricFamily("liveavatar_asyncio_tasks", "Tasks alive on the service's event loop",
                                value=len(asyncio.all_tasks(eng.loop)) if eng.loop else 0)
        yield GaugeMetricFamily("liveavatar_threads", "Python threads alive in the service",
                                value=threading.active_count())

        frames_in = CounterMetricFamily("liveavatar_frames_received", "Camera frames received", labels=["session"])
        frames_out = CounterMetricFamily("liveavatar_frames_rendered", "Avatar frames rendered", labels=["session"])
        cues = CounterMetricFamily("liveavatar_cues", "Perception results consumed", labels=["session"])
        dropped = CounterMetricFamily("liveavatar_dropped_frames", "Frames dropped (latest wins)", labels=["session",
                                                                                                           "stage"])
        stage = GaugeMetricFamily("liveavatar_stage_ms", "Per-stage time (ms)", labels=["session", "stage", "quantile"])
        viewers = GaugeMetricFamily("liveavatar_viewers", "Connected viewers", labels=["session"])
        camera = GaugeMetricFamily("liveavatar_camera_connected", "1 while a camera feeds the session",
                                   labels=["session"])
        events = CounterMetricFamily("liveavatar_control_events", "Control events applied", labels=["session"])
        for sid, s in list(eng.sessions.items()):
            frames_in.add_metric([sid], s.frames_received.count)
            frames_out.add_metric([sid], s.rendered.count)
            cues.add_metric([sid], s.cues_meter.count)
            dropped.add_metric([sid, "ingest"], s.input.raw_video.dropped)
            dropped.add_metric([sid, "perception"], s.frames_in.dropped)
            dropped.add_metric([sid, "cues"], s.cues.dropped)
            dropped.add_metric([sid, "audio"], s.input.audio_dropped)
            if s.voice is not None:
                dropped.add_metric([sid, "voice_out"], s.voice.dropped)
            for name, v in s.timer.summary().items():
                stage.add_metric([sid, name, "0.5"], v["median_ms"])
                stage.add_metric([sid, name, "0.95"], v["p95_ms"])
            viewers.add_metric([sid], s.viewers)
            camera.add_metric([sid], 1.0 if s.ingest else 0.0)
            events.add_metric([sid], s.events_applied)
        yield from (frames_in, frames_out, cues, dropped, stage, viewers, camera, events)


def make_registry(engine: Engine) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EngineCollector(engine))
    return reg


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
