"""`serve --source FILE`, the demo fallback, a camera taking over from a file, and the MPEG-TS
feed endpoint (what OBS's media source reads)."""
from __future__ import annotations

import socket
import time

import pytest

from liveavatar.paths import assets_dir
from liveavatar.server.config import ServerConfig
from tests.media import path as media_path
from tests.server.harness import free_port, http, running_server, wait_until
from tests.server.rtc_clients import publish


@pytest.fixture(scope="module")
def file_server():
    with running_server(size=64, source=media_path("messi_sway.mp4")) as srv:
        yield srv


async def test_source_file_drives_the_default_session_until_a_camera_comes(file_server):
    import asyncio
    s = file_server.engine.sessions["default"]
    await asyncio.to_thread(wait_until, lambda: s.frames_received.count > 20, 30, 0.1, "file frames")
    assert s.file_driver is not None and s.file_driver.error is None
    st = (await asyncio.to_thread(http, file_server.url + "/api/sessions/default/state"))[1]
    assert st["ingest"] == "file"
    # Capture times of the file's frames flow through to rendered frames.
    await asyncio.to_thread(wait_until, lambda: s.latest is not None and s.latest.t_capture_ns > 0, 10, 0.1,
                            "rendered frames carrying the file's capture times")
    pub = await publish(file_server.url + "/whip/default", media_path("astronaut_talk.mp4"), audio=False)
    try:
        assert s.file_driver is None and s.ingest_kind == "webrtc"
    finally:
        await pub.close()


def test_demo_clip_plays_when_no_camera_connects():
    assert (assets_dir() / "demo.mp4").exists()
    with running_server(size=64, demo=True, demo_after_s=0.5) as srv:
        s = srv.engine.sessions["default"]
        wait_until(lambda: s.file_driver is not None and s.frames_received.count > 10, 30, what="the demo clip")
        assert s.file_driver.path.name == "demo.mp4"


def test_no_demo_means_an_idle_avatar():
    with running_server(size=64, demo_after_s=0.2) as srv:
        s = srv.engine.sessions["default"]
        wait_until(lambda: s.rendered.count > 15, 20, what="idle frames")
        assert s.file_driver is None and s.frames_received.count == 0


def test_mpegts_feed_endpoint_sends_the_avatar_over_udp(file_server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        port = rx.getsockname()[1]
        url = file_server.url + "/api/sessions/default/feeds"
        status, body = http(url, "POST", {"kind": "mpegts", "url": f"udp://127.0.0.1:{port}"})
        assert status == 200 and body["feed"]["reader_url"] == f"udp://127.0.0.1:{port}"
        data = b""
        deadline = time.monotonic() + 10
        while len(data) < 20 * 188 and time.monotonic() < deadline:
            data += rx.recv(65536)
        assert data[0] == 0x47 and data[188] == 0x47  # MPEG-TS sync bytes
        status, body = http(url, "DELETE")
        assert status == 200 and body["stopped"] == ["mpegts"]
    status, body = http(url, "POST", {"kind": "mpegts", "url": "http://example.com/x"})
    assert status == 400 and "udp://" in body["error"]
    status, body = http(url, "POST", {"kind": "rtmp", "url": "udp://127.0.0.1:5"})
    assert status == 422 and body["error"].startswith("kind:")


def test_the_last_word_before_the_microphone_stops_is_decoded(tmp_path):
    """"okay everyone, time to dance" and then the track ends (no silence after "dance"): the
    input pump decodes the pending utterance, and the keyword comes with the next frame's cues."""
    import numpy as np

    from liveavatar.perception import Perception
    from liveavatar.runtime import LatestSlot, StageTimer
    from liveavatar.sources.webrtc import InputPump
    from liveavatar.types import AudioChunk, CapturedFrame
    from tests.media import read_wav, speak

    speech, rate = read_wav(speak("okay everyone, time to dance", tmp_path / "speech.wav"))
    perception = Perception(static=False, pose=False, hands=False, face=False, keywords=("dance",),
                            audio_queue=400)
    pump = InputPump("t", perception, LatestSlot(), StageTimer())
    pump.start()
    try:
        step = rate // 50
        for i in range(0, len(speech), step):
            pump.put_audio(AudioChunk(speech[i:i + step], rate, i, time.monotonic_ns()))
            time.sleep(0.002)          # the deque holds 50 chunks: let the pump keep up
        assert pump.audio_dropped == 0
        pump.end_audio()
        heard: list[str] = []
        deadline = time.monotonic() + 30
        while not heard and time.monotonic() < deadline:
            time.sleep(0.2)
            cues = perception.process_video(CapturedFrame(np.zeros((48, 64, 3), np.uint8), 0, time.monotonic_ns()))
            heard += [k.word for k in cues.keywords]
    finally:
        pump.stop()
        pump.join(2)
        perception.close()
    assert heard == ["dance"]


def test_health_reports_the_voice_vads_real_onnx_providers():
    """Found on a fresh machine: /health read a `_sess` that VoiceAnalyzer does not have."""
    import types

    from liveavatar.perception import Perception
    from liveavatar.server.engine import Engine
    from liveavatar.server.health import service_health

    perception = Perception(static=False, pose=False, hands=False, face=False)
    try:
        engine = Engine(ServerConfig(port=free_port(), size=64), stages=None, loop=None)
        engine.sessions["default"] = types.SimpleNamespace(perception=perception)
        providers = service_health(engine)["perception"]["voice_vad_providers"]
    finally:
        perception.close()
    assert providers == perception.voice_analyzer.vad.providers and "CPUExecutionProvider" in providers
