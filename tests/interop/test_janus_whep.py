"""WHEP through Janus (`/whep-janus/{sid}`, liveavatar/server/sfu.py JanusWhep) against a real
Janus 1.1 (Debian's package, started by the test): an aiortc WHEP player takes Janus's offer
from the service, answers with PATCH and receives the avatar from Janus, not from the service's
encoder; a standard player's own offer is refused with a one-line reason."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from liveavatar.server.session import STRIP_ROWS
from liveavatar.server.sfu import SFU
from tests.interop.janus_clients import local_janus, wait_published
from tests.media import path as media_path
from tests.server.harness import running_server

SIZE = 64
SDP = "application/sdp"


@pytest.fixture(scope="module")
def janus():
    with local_janus() as j:
        yield j


@pytest.fixture(scope="module")
def server(janus):
    with running_server(size=SIZE, sfu=f"janus:{janus.url}19", source=media_path("astronaut_talk.mp4")) as srv:
        yield srv


class WhepPlayer:
    """A WHEP player in the server-offer form: POST nothing, answer the offer with PATCH."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.latest = None
        self.location = ""
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                    self.latest = frame
        except Exception:   # the track ended
            pass

    async def watch(self, http: aiohttp.ClientSession, base: str, sid: str = "default") -> WhepPlayer:
        async with http.post(f"{base}/whep-janus/{sid}") as r:
            assert r.status == 201, await r.text()
            assert r.content_type == SDP
            self.location = r.headers["Location"]
            offer = await r.text()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        async with http.patch(base + self.location, data=self.pc.localDescription.sdp,
                              headers={"Content-Type": SDP}) as r:
            assert r.status == 204, await r.text()
        return self

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


async def _until(predicate, what: str, timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_whep_player_gets_the_avatar_from_janus_not_from_the_service(server):
    await asyncio.to_thread(wait_published, server.url)
    publishing = server.app[SFU]
    async with aiohttp.ClientSession() as http:
        players = [await WhepPlayer().watch(http, server.url) for _ in range(2)]
        try:
            await _until(lambda: min(p.video_frames for p in players) >= 30, "30 frames at each player")
            for p in players:
                img = p.latest.to_ndarray(format="rgb24")
                assert img.shape == (SIZE + STRIP_ROWS, 2 * SIZE, 3)     # the packed colour | alpha picture
                alpha = img[:SIZE, SIZE:, 0].astype(int)
                assert alpha[SIZE // 2 - 4:SIZE // 2 + 4, SIZE // 2 - 4:SIZE // 2 + 4].mean() > 128
            s = server.engine.sessions["default"]
            # Janus does the fan-out: the service has no viewer of its own, one packed consumer.
            assert s.viewers == 0 and s.want_packed == 1
            assert publishing.publishers["default"].info()["live"]
            # leaving: DELETE ends the subscription; a second DELETE finds nothing
            async with http.delete(server.url + players[0].location) as r:
                assert r.status == 200
            async with http.delete(server.url + players[0].location) as r:
                assert r.status == 404 and "\n" not in (await r.json())["error"]
            before = players[1].video_frames
            await _until(lambda: players[1].video_frames > before + 10, "the other player to keep receiving")
        finally:
            for p in players:
                await p.close()


@pytest.mark.slow
async def test_a_standard_whep_offer_is_refused_with_the_reason(server):
    await asyncio.to_thread(wait_published, server.url)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/whep-janus/default", data=pc.localDescription.sdp,
                                 headers={"Content-Type": SDP}) as r:
                body = await r.json()
                assert r.status == 415 and r.headers["Accept-Post"] == SDP
                assert "only offers to subscribers" in body["error"] and "\n" not in body["error"]
            async with http.post(f"{server.url}/whep-janus/nobody") as r:
                assert r.status == 404
            async with http.patch(f"{server.url}/whep-janus/default/{'0' * 32}", data="v=0\r\nm=video 9",
                                  headers={"Content-Type": SDP}) as r:
                assert r.status == 404
            async with http.patch(f"{server.url}/whep-janus/default/{'0' * 32}", data="{}",
                                  headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "application/sdp" in (await r.json())["error"]
    finally:
        await pc.close()


@pytest.mark.slow
async def test_a_player_that_never_answers_is_let_go(server, monkeypatch):
    from liveavatar.server import sfu
    monkeypatch.setattr(sfu, "ANSWER_TIMEOUT_S", 1.0)
    await asyncio.to_thread(wait_published, server.url)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/whep-janus/default") as r:
            assert r.status == 201
            location = r.headers["Location"]
        await asyncio.sleep(3.0)
        async with http.delete(server.url + location) as r:
            assert r.status == 404       # already gone
