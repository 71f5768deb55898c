"""Fault injection against a real service: the camera's track ends mid-stream, the generator
raises on one frame, the perception worker dies, a busy process starves the CPU. In each the
service stays up, the avatar idles or continues, viewers keep getting frames, the fault is
reported (/health, /metrics, log) and counted, and frames are dropped and counted, not queued.
(Closing the browser tab and killing OBS are in test_browser_faults.py and test_obs_fault.py.)"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from liveavatar.server.config import ServerConfig
from liveavatar.server.stages import real_stages
from liveavatar.types import FACE_FEATURES, Cues, Part, VoiceFeatures
from tests.media import path as media_path
from tests.pressure.harness import CpuHog
from tests.server.fakes import FakePerception, fake_perception_stages
from tests.server.harness import ServerThread, free_port, http
from tests.server.rtc_clients import Player, publish

pytestmark = pytest.mark.slow
SIZE = 128
CLIP = "astronaut_talk.mp4"   # a real person talking (animated photo + speech)


async def until(pred, timeout: float = 30.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def health(server) -> dict:
    status, body = http(server.url + "/health")
    assert status == 200, body
    return body


# ---------------------------------------------------------------------------------------------
# Real perception (MediaPipe): the camera's track ends mid-stream, and a CPU hog
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live():
    cfg = ServerConfig(port=free_port(), size=SIZE, demo=False)
    srv = ServerThread(cfg, real_stages(cfg)).start()
    yield srv
    srv.stop()


async def test_camera_track_ends_mid_stream_avatar_idles_and_recovers(live):
    s = live.engine.sessions["default"]
    pub = await publish(live.url + "/whip/default", media_path(CLIP))
    player = await Player().start(live.url + "/whep/default")
    try:
        await until(lambda: s.conditioner.state()["body_present"] > 0.5 or s.conditioner.state()["face_present"] > 0.5,
                    60, "perception to track the person")
        # The camera's media ends, the connection stays: no frame arrives any more.
        pub.player.stop()
        received = s.frames_received.count
        await until(lambda: s.conditioner.state()["body_present"] < 0.05
                    and s.conditioner.state()["face_present"] < 0.05,
                    30, "the avatar to idle once tracking is lost")
        assert s.frames_received.count - received < 60   # at most what was in flight
        assert s.ingest is not None, "the (silent) camera connection is still there"
        rendered, seen = s.rendered.count, player.video_frames
        await asyncio.sleep(2.0)
        assert s.rendered.count > rendered + 20, "the idle avatar stopped rendering"
        assert player.video_frames > seen, "the viewer stopped getting the idle avatar"
        # The camera comes back (a new connection replaces the silent one).
        await pub.close()
        pub = await publish(live.url + "/whip/default", media_path(CLIP))
        got = s.frames_received.count
        await until(lambda: s.frames_received.count > got + 30, 30, "frames from the new camera")
        await until(lambda: s.conditioner.state()["face_present"] > 0.5, 60, "tracking again")
        assert health(live)["status"] == "ok"
    finally:
        await player.close()
        await pub.close()


async def test_cpu_starvation_drops_frames_instead_of_queueing(live):
    """Two busy processes on a 2-core machine for 15 s, with a camera and a viewer: rendering
    goes on, late camera frames are dropped and counted, and the newest frame's capture age stays
    bounded (queued frames would make it grow with the length of the starvation)."""
    s = live.engine.sessions["default"]
    pub = await publish(live.url + "/whip/default", media_path(CLIP))
    player = await Player().start(live.url + "/whep/default")
    hog_s = 15.0
    try:
        await until(lambda: s.frames_received.count > 60 and s.latest is not None and s.latest.t_capture_ns,
                    60, "camera frames to be rendered")

        def drops() -> int:
            st = s.stats()["dropped"]
            return st["ingest"] + st["perception"] + st["cues"]
        before_drops, before_rendered, before_viewer = drops(), s.rendered.count, player.video_frames
        ages = []
        with CpuHog(workers=2, seconds=hog_s):
            t_end = time.monotonic() + hog_s
            while time.monotonic() < t_end:
                await asyncio.sleep(1.0)
                frame = s.latest
                ages.append((time.monotonic_ns() - frame.t_capture_ns) / 1e9)
        assert http(live.url + "/health")[0] == 200
        assert s.rendered.count > before_rendered + hog_s * 5, "rendering stalled under CPU starvation"
        assert player.video_frames > before_viewer, "the viewer stopped getting frames"
        assert drops() > before_drops, "late frames were not dropped (or not counted)"
        # Bounded: a queue would let the age grow toward the starvation length; dropping keeps
        # the newest frame recent. The bound is a third of the starvation, far above normal.
        assert max(ages[len(ages) // 2:]) < hog_s / 3, f"capture age grew under starvation: {ages}"
        m = http(live.url + "/metrics")[1]
        assert 'liveavatar_dropped_frames_total{session="default",stage="perception"}' in m
    finally:
        await player.close()
        await pub.close()


# ---------------------------------------------------------------------------------------------
# Injected faults in our own stages (test-only plug-ins through the server's Stages seam)
# ---------------------------------------------------------------------------------------------

class FlakyGenerator:
    """The real rig2d generator, raising on its `fail_on`-th render call (a corrupt batch, a
    CUDA hiccup)."""

    def __init__(self, inner, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render(self, conds, characters):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("injected render failure")
        return self.inner.render(conds, characters)


@pytest.fixture()
def flaky():
    cfg = ServerConfig(port=free_port(), size=SIZE, demo=False)
    stages = fake_perception_stages(cfg)
    make = stages.generator
    stages.generator = lambda: FlakyGenerator(make(), fail_on=90)
    srv = ServerThread(cfg, stages).start()
    yield srv
    srv.stop()


async def test_generator_raising_on_one_frame_skips_only_that_frame(flaky, caplog):
    caplog.set_level(logging.ERROR, logger="liveavatar.server")
    player = await Player().start(flaky.url + "/whep/default")
    try:
        loop = flaky.engine.render_loop
        await until(lambda: loop.errors >= 1, 30, "the injected failure")
        rendered, seen = loop.frames, player.video_frames
        await until(lambda: loop.frames > rendered + 30, 20, "rendering to go on after the failure")
        await until(lambda: player.video_frames > seen + 10, 20, "the viewer to keep getting frames")
        h = health(flaky)
        assert h["render_errors"] == 1 and "injected render failure" in h["error"]
        assert "liveavatar_render_errors_total 1.0" in http(flaky.url + "/metrics")[1]
        assert sum("render tick failed" in r.getMessage() for r in caplog.records) == 1
        assert http(flaky.url + "/api/sessions/default/frame.png")[0] == 200
    finally:
        await player.close()


class DyingPerception(FakePerception):
    """Produces (empty) cues until frame `die_at`, where it raises SystemExit: the worker thread
    ends silently, as it would on a fatal error in native code."""
    die_at = 40

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def process_video(self, f):
        self.frames += 1
        if self.frames == self.die_at:
            raise SystemExit("injected perception death")
        return Cues(f.seq, f.t_capture_ns, Part.empty(33), Part.empty(478), Part.empty(21), Part.empty(21),
                    np.zeros(len(FACE_FEATURES), np.float32), False, VoiceFeatures(), (),
                    (f.image.shape[1], f.image.shape[0]))


@pytest.fixture()
def mortal():
    cfg = ServerConfig(port=free_port(), size=SIZE, demo=False)
    stages = real_stages(cfg)          # the real PerceptionWorker thread ...
    stages.perception = DyingPerception  # ... around a stand-in that kills it
    srv = ServerThread(cfg, stages).start()
    yield srv
    srv.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the injected death
async def test_dead_perception_worker_is_replaced_and_reported(mortal, caplog):
    caplog.set_level(logging.ERROR, logger="liveavatar.server")
    s = mortal.engine.sessions["default"]
    first_worker = s.worker
    pub = await publish(mortal.url + "/whip/default", media_path(CLIP))
    try:
        await until(lambda: not first_worker.alive, 40, "the injected worker death")
        await until(lambda: health(mortal)["perception_worker_restarts"] == 1, 10, "/health to report the restart")
        assert s.worker is not first_worker and s.worker.alive
        cues, rendered = s.cues_meter.count, s.rendered.count
        await until(lambda: s.cues_meter.count > cues + 10, 20, "cues from the new worker")
        assert s.rendered.count > rendered, "the avatar froze"
        assert any("perception worker died" in r.getMessage() for r in caplog.records)
        assert "liveavatar_perception_worker_restarts_total 1.0" in http(mortal.url + "/metrics")[1]
    finally:
        await pub.close()
