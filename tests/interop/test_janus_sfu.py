"""`serve --sfu janus:...` against a real Janus (Debian's package, started by the test on
127.0.0.1 with its config in a temp dir): the service publishes its session once, aiortc
subscribers watch it through Janus, and a Janus killed mid-stream leaves the service healthy,
its viewers served directly, and the session published again once Janus is back."""
from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from liveavatar.interop.janus import BACKOFF_S, parse_sfu
from liveavatar.server.session import STRIP_ROWS
from liveavatar.server.sfu import SFU
from tests.interop.janus_clients import JanusViewer, local_janus, wait_published
from tests.media import path as media_path
from tests.server.harness import http, running_server
from tests.server.rtc_clients import Player
from tests.server.test_cli import serve

SIZE = 64
VIEWERS = 3


@pytest.fixture(scope="module")
def janus():
    with local_janus() as j:
        yield j


@pytest.fixture(scope="module")
def server(janus):
    with running_server(size=SIZE, sfu=f"janus:{janus.url}17",
                        source=media_path("astronaut_talk.mp4")) as srv:
        yield srv


def test_sfu_addresses_parse_and_bad_ones_are_one_line_errors():
    t = parse_sfu("janus:ws://127.0.0.1:8188/42")
    assert (t.url, t.room) == ("ws://127.0.0.1:8188/", 42)
    assert parse_sfu("janus:wss://sfu.example:443").room > 0
    for bad in ("rtmp://x", "janus:http://h:8188", "janus:ws://h:8188/room", "janus:ws://h:99999",
                "janus:ws://h:8188/1\nX", "janus:ws://:8188"):
        with pytest.raises(ValueError) as e:
            parse_sfu(bad)
        assert "\n" not in str(e.value) and "janus:ws://HOST:8188" in str(e.value)
    r = serve("--sfu", "janus:ws://localhost:8188/lobby")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "sfu" in r.stderr and "positive number" in r.stderr


@pytest.mark.slow
async def test_subscribers_receive_the_avatar_and_voice_through_janus(server):
    info = wait_published(server.url)
    assert info["kind"] == "janus" and info["room"] == 17 and info["feed"]
    viewers = [await JanusViewer().start(info) for _ in range(VIEWERS)]
    try:
        async def all_have(attr: str, n: int, timeout: float = 40.0) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while min(getattr(v, attr) for v in viewers) < n:
                assert loop.time() < deadline, f"{attr}: {[getattr(v, attr) for v in viewers]} (wanted {n} each)"
                await asyncio.sleep(0.1)

        await all_have("video_frames", 30)
        await all_have("audio_frames", 25)     # half a second of the streamer's voice
        for v in viewers:
            img = v.latest.to_ndarray(format="rgb24")
            assert img.shape == (SIZE + STRIP_ROWS, 2 * SIZE, 3)     # the packed colour | alpha picture
            alpha = img[:SIZE, SIZE:, 0].astype(int)
            assert alpha[SIZE // 2 - 4:SIZE // 2 + 4, SIZE // 2 - 4:SIZE // 2 + 4].mean() > 128
            assert alpha[:3, :3].mean() < 40
        s = server.engine.sessions["default"]
        # Janus does the fan-out: the service has no viewer of its own and one packed consumer
        # (the Janus publisher), so it packs and encodes each frame once for all of them.
        assert s.viewers == 0 and s.want_packed == 1
        frames_before, encoded_before = s.rendered.count, s.shared_encoder.encoded
        await asyncio.sleep(2.0)
        assert s.shared_encoder.encoded - encoded_before <= s.rendered.count - frames_before + 1
        # The pictures change: the avatar is alive through Janus.
        pictures = set()
        for _ in range(6):
            pictures.add(int(np.asarray(viewers[0].latest.to_ndarray(format="gray"), dtype=np.int64).sum()))
            await asyncio.sleep(0.3)
        assert len(pictures) > 1
    finally:
        for v in viewers:
            await v.close()


@pytest.mark.slow
async def test_each_session_is_published_and_a_closed_one_leaves(server):
    default = wait_published(server.url)
    server.call(server.engine.get_or_create("guest"))
    guest = wait_published(server.url, session="guest")
    assert guest["feed"] != default["feed"] and guest["room"] == default["room"]
    viewer = await JanusViewer().start(guest)
    try:
        await _until(lambda: viewer.video_frames > 10, "the guest session's frames through Janus")
    finally:
        await viewer.close()
    server.call(server.engine.remove("guest"))
    await _until(lambda: "guest" not in server.app[SFU].publishers, "the closed session's publisher to stop")
    assert http(server.url + "/api/sessions/guest/sfu")[0] == 404
    assert http(server.url + "/api/sessions/default/sfu")[1]["live"]


@pytest.mark.slow
async def test_with_tokens_the_room_has_a_pin_that_only_viewers_learn(janus):
    from liveavatar.interop.janus import JanusError
    with running_server(size=SIZE, sfu=f"janus:{janus.url}18", token="control-t", viewer_token="viewer-t") as srv:
        assert http(srv.url + "/api/sessions/default/sfu")[0] == 401
        info = wait_published(srv.url, headers={"Authorization": "Bearer viewer-t"})
        assert info["pin"]
        stranger = JanusViewer()
        with pytest.raises(JanusError, match="PIN|pin|nauthorized"):
            await stranger.start({**info, "pin": None})
        await stranger.close()
        viewer = await JanusViewer().start(info)
        try:
            await _until(lambda: viewer.video_frames > 10, "frames through the PIN-protected room")
        finally:
            await viewer.close()


@pytest.mark.slow
async def test_killing_janus_mid_stream_falls_back_to_direct_viewers_then_republishes(server, janus, caplog):
    info = wait_published(server.url)
    viewer = await JanusViewer().start(info)
    try:
        await _until(lambda: viewer.video_frames > 10, "frames through Janus")
    finally:
        await viewer.close()
    caplog.set_level(logging.DEBUG, logger="liveavatar.janus")
    janus.kill()
    await _until(lambda: not http(server.url + "/api/sessions/default/sfu")[1]["live"], "the loss to be noticed")
    # The service stays up and healthy; a viewer watches directly meanwhile.
    assert http(server.url + "/health")[0] == 200
    player = await Player().start(server.url + "/whep/default?layout=packed")
    try:
        await player.wait_frames(20)
    finally:
        await player.close()
    await asyncio.sleep(BACKOFF_S[0] + BACKOFF_S[1] + 0.5)   # a few retries against the dead address
    warnings = [r for r in caplog.records if r.name == "liveavatar.janus" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "not published" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "retry" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    # Janus is back on the same address: the session is published again and watchable.
    janus.start()
    info = wait_published(server.url, timeout=BACKOFF_S[-1] + 20)
    assert info["losses"] >= 1
    viewer = await JanusViewer().start(info)
    try:
        await _until(lambda: viewer.video_frames > 10, "frames through the restarted Janus")
    finally:
        await viewer.close()
    assert http(server.url + "/health")[0] == 200


@pytest.mark.slow
def test_keepalives_hold_the_publication_past_janus_session_timeout(monkeypatch):
    """Janus drops a session that says nothing for session_timeout: here 3 s, keepalives every 1 s."""
    import time

    from liveavatar.interop import janus as janus_mod
    monkeypatch.setattr(janus_mod, "KEEPALIVE_S", 1.0)
    with local_janus(session_timeout_s=3) as j, running_server(size=SIZE, sfu=f"janus:{j.url}19") as srv:
        first = wait_published(srv.url)
        time.sleep(8)
        info = http(srv.url + "/api/sessions/default/sfu")[1]
        assert info["live"] and info["feed"] == first["feed"]
        assert info["attempts"] == 1 and info["losses"] == 0, info


@pytest.mark.slow
def test_no_janus_at_start_the_service_serves_directly_and_keeps_trying(caplog):
    from tests.server.harness import free_port, wait_until
    caplog.set_level(logging.DEBUG, logger="liveavatar.janus")
    with running_server(size=SIZE, sfu=f"janus:ws://127.0.0.1:{free_port()}/5") as srv:
        info = wait_until(lambda: (i := http(srv.url + "/api/sessions/default/sfu")[1])["attempts"] >= 2 and i, 30,
                          what="two attempts at the absent Janus")
        assert not info["live"] and info["feed"] is None and info["last_error"]
        assert http(srv.url + "/health")[0] == 200
    warnings = [r for r in caplog.records if r.name == "liveavatar.janus" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "served directly" in warnings[0].getMessage()


async def _until(pred, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
