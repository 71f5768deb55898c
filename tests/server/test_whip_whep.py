"""WHIP ingest and WHEP playback with aiortc as the standard client, against a real service
(real generator and conditioner; perception is a stand-in here, the browser tests use the real
one). Also: sessions, admission limit, camera drop and reconnect, malformed offers."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from liveavatar.server import timecode
from liveavatar.server.session import STRIP_ROWS
from tests.media import path as media_path
from tests.server.harness import http, running_server
from tests.server.rtc_clients import Player, post_sdp, publish

SIZE = 128


@pytest.fixture(scope="module")
def server():
    with running_server(size=SIZE, max_sessions=3) as srv:
        yield srv


async def _until(pred, timeout=20.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_whip_ingest_carries_capture_time_to_whep_viewer(server):
    """A stamped real video goes in over WHIP; the WHEP viewer's packed frames carry the
    same capture stamps in their timecode strip (what glass-to-glass is measured with)."""
    pub = await publish(server.url + "/whip/default", media_path("astronaut_talk.mp4"), stamp=True)
    player = await Player().start(server.url + "/whep/default?layout=packed")
    try:
        s = server.engine.sessions["default"]
        await _until(lambda: s.frames_received.count > 20, what="camera frames at the service")
        assert s.ingest is not None and s.ingest_kind == "webrtc"
        assert s.input.stamped_frames > 0, "the camera timecode was not read at ingest"
        await player.wait_frames(30)
        img = player.latest.to_ndarray(format="rgb24")
        assert img.shape == (SIZE + STRIP_ROWS, 2 * SIZE, 3)  # colour | alpha, strip below
        seen = None
        for _ in range(60):
            img = player.latest.to_ndarray(format="rgb24")
            seen = timecode.read(img[SIZE:], timecode.AVATAR_FIELDS)
            if seen and seen[0] in pub.video.stamps:
                break
            await asyncio.sleep(0.05)
        assert seen is not None, "no readable timecode strip in the viewer's frames"
        assert seen[0] in pub.video.stamps, "the viewer's capture stamp is not one the camera sent"
        assert timecode.age_ms(seen[0]) < 5000
        # The alpha half is opaque where the character is and clear at the corners.
        alpha = img[:SIZE, SIZE:, 0].astype(int)
        assert alpha[SIZE // 2 - 10: SIZE // 2 + 10, SIZE // 2 - 10: SIZE // 2 + 10].mean() > 200
        assert alpha[:8, :8].mean() < 20
    finally:
        await player.close()
        await pub.close()


async def test_obs_style_h264_whip_ingest(server):
    pub = await publish(server.url + "/whip/h264", media_path("grace_nod.mp4"), video_codec="video/H264")
    try:
        assert "H264/90000" in pub.pc.remoteDescription.sdp and "VP8/90000" not in pub.pc.remoteDescription.sdp
        s = server.engine.sessions["h264"]
        await _until(lambda: s.frames_received.count > 10, what="H.264 camera frames")
        await _until(lambda: s.frames_in.put_count > 5, what="decoded frames handed to perception")
    finally:
        await pub.close()
    await asyncio.to_thread(server.call, server.engine.remove("h264"))


async def test_packed_viewers_share_one_encode(server):
    players = [await Player().start(server.url + "/whep/default?layout=packed") for _ in range(3)]
    try:
        for p in players:
            await p.wait_frames(20)
        enc = server.engine.sessions["default"].shared_encoder
        rendered, encoded = server.engine.sessions["default"].rendered.count, enc.encoded
        received = sum(p.video_frames for p in players)
        # three viewers decoded frames, yet the session encoded each rendered frame once at most
        assert received >= 60 and encoded <= rendered
        assert all(p.latest.width == 2 * SIZE for p in players)
    finally:
        for p in players:
            await p.close()


async def test_flat_whep_for_standard_players_and_voice(server):
    pub = await publish(server.url + "/whip/voice", media_path("astronaut_talk.mp4"))
    player = await Player().start(server.url + "/whep/voice")
    try:
        await player.wait_frames(20)
        img = player.latest.to_ndarray(format="rgb24")
        assert img.shape == (SIZE, SIZE, 3)
        corner = img[:6, :6].reshape(-1, 3).mean(axis=0)
        assert corner[1] > 200 and corner[0] < 60 and corner[2] < 60  # chroma green background
        await _until(lambda: player.audio_frames > 10, what="the streamer's voice at the viewer")
    finally:
        await player.close()
        await pub.close()


async def test_viewer_before_streamer_sees_idle_avatar_then_drop_and_reconnect(server):
    player = await Player().start(server.url + "/whep/late?layout=packed")
    try:
        await player.wait_frames(10)  # idle avatar before any camera exists
        s = server.engine.sessions["late"]
        assert s.ingest is None
        pub = await publish(server.url + "/whip/late", media_path("messi_sway.mp4"))
        await _until(lambda: s.frames_received.count > 10, what="camera frames")
        assert s.ingest is not None
        before = player.video_frames
        await pub.close()  # the camera goes away: the avatar keeps going (idles)
        await _until(lambda: s.ingest is None, timeout=40, what="the dropped camera to be noticed")
        await player.wait_frames(before + 15)
        got = s.frames_received.count
        pub2 = await publish(server.url + "/whip/late", media_path("messi_sway.mp4"))
        await _until(lambda: s.frames_received.count > got + 10, what="frames after reconnect")
        assert s.ingest is pub2 or s.ingest is not None
        await pub2.close()
    finally:
        await player.close()


async def test_admission_limit_answers_structured_error(server):
    existing = len(server.engine.sessions)
    players = []
    try:
        for i in range(3 - existing):
            players.append(await Player().start(server.url + f"/whep/extra{i}"))
        pc_offer = (await _offer_sdp())
        status, text, headers = await post_sdp(server.url + "/whep/one-too-many", pc_offer)
        assert status == 503
        body = json.loads(text)
        assert body["code"] == "session_limit" and body["limit"] == 3
        assert "Retry-After" in headers
    finally:
        for p in players:
            await p.close()
    for i in range(3 - existing):  # free the slots for the other tests
        await asyncio.to_thread(server.call, server.engine.remove(f"extra{i}"))


async def _offer_sdp() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_bad_offers_get_clear_4xx_and_service_keeps_running(server):
    url = server.url + "/whip/default"
    status, body, _ = await post_sdp(url, "hello")
    assert status == 400 and "malformed SDP" in body
    status, body, _ = await post_sdp(url, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                                          "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
                                          "a=ice-ufrag:x\r\na=fingerprint:sha-256 zz\r\n")
    assert status == 400 and "SDP" in body
    status, body = http(url, "POST", b"v=0", {"Content-Type": "text/plain"})
    assert status == 415 and "application/sdp" in body["error"]
    status, body = http(url, "POST", b"v=0\r\n" + b"a" * 400_000, {"Content-Type": "application/sdp"})
    assert status == 413 and "too large" in body["error"]
    # A valid-looking resource that does not exist; PATCH (trickle) is refused per RFC 9725.
    status, body = http(server.url + "/whip/default/" + "0" * 32, "DELETE")
    assert status == 404
    status, _ = http(server.url + "/whip/default/" + "0" * 32, "PATCH", b"",
                     {"Content-Type": "application/trickle-ice-sdpfrag"})
    assert status == 405
    status, body = http(server.url + "/health")
    assert status == 200 and body["status"] == "ok"


async def test_whep_resource_delete_ends_the_viewer(server):
    player = await Player().start(server.url + "/whep/default")
    try:
        s = server.engine.sessions["default"]
        await player.wait_frames(5)
        viewers = s.viewers
        status, _ = await asyncio.to_thread(http, server.url + player.location, "DELETE")
        assert status == 200
        await _until(lambda: s.viewers == viewers - 1, what="the viewer count to drop")
        status, _ = await asyncio.to_thread(http, server.url + player.location, "DELETE")
        assert status == 404
    finally:
        await player.close()


def test_packer_layout_is_premultiplied_colour_beside_alpha():
    from liveavatar.output.webrtc import Packer
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (200, 100, 50, 128)
    p = Packer(8, (0, 255, 0), flat_strip=False)
    p.pack(rgba, (1, 2, 3))
    assert tuple(p.packed[3, 3]) == (100, 50, 25)        # colour premultiplied by alpha
    assert tuple(p.packed[3, 8 + 3]) == (128, 128, 128)  # alpha as grey beside it
    assert tuple(p.packed[0, 8]) == (0, 0, 0)
    p.compose_flat(rgba, (0, 0, 0))
    assert tuple(p.flat[0, 0]) == (0, 255, 0)
    assert tuple(p.flat[3, 3]) == (100, 177, 25)         # half over green


async def test_packet_ring_keeps_encoded_packets_in_order_and_resyncs_slow_readers():
    from liveavatar.output.webrtc import EncodedPacket, PacketRing
    ring = PacketRing(asyncio.get_running_loop(), size=4)
    for seq in range(1, 7):  # seq 1..6; the ring keeps 3..6
        ring._append(EncodedPacket(seq, None, seq == 5))
    assert (await ring.next_after(4)).seq == 5   # in order, nothing skipped
    assert (await ring.next_after(5)).seq == 6
    assert await ring.next_after(1) is None       # 2 already left the ring: resync
    waiting = asyncio.ensure_future(ring.next_after(6))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    ring.publish(EncodedPacket(7, None, False))
    assert (await asyncio.wait_for(waiting, 2)).seq == 7
