"""Malformed SDP and WHIP/WHEP bodies (hypothesis): starting from a real aiortc offer, lines are
dropped, duplicated, cut, corrupted and replaced. The service answers 201 (and the resource is
deleted again) or a one-line 4xx; never a 5xx, and it keeps rendering."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import examples
from tests.server.harness import http, running_server

EXAMPLES = examples(40)
SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(scope="module")
def server():
    with running_server(size=64, max_sessions=2) as srv:
        yield srv


def real_offer(direction: str) -> list[str]:
    """Lines of a genuine aiortc offer (video + audio) in the given direction."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    async def make():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if direction == "sendonly":
            pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        else:
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp
    return asyncio.run(make()).strip().split("\r\n")


OFFERS = {"whip": real_offer("sendonly"), "whep": real_offer("recvonly")}

junk_line = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["m=video 9 UDP/TLS/RTP/SAVPF", "m=audio -1 RTP/AVP 0", "a=fingerprint:sha-256 ZZ",
                     "a=fingerprint:md5 00", "a=ice-ufrag:", "a=ice-pwd:x", "a=rtpmap:96 VP8/0",
                     "a=rtpmap:abc", "c=IN IP4 999.1.1.1", "a=candidate:1 1 UDP 1 1.2.3.4 99999 typ host",
                     "a=setup:bogus", "a=mid:", "a=group:BUNDLE 7 8 9", "m=application 9 UDP/DTLS/SCTP x",
                     "a=ssrc:-5 cname:x", "a=fmtp:96 " + "x" * 2000, "m=video 0 RTP/AVP", "v=1"]))


@st.composite
def mangled(draw, lines: list[str]) -> str:
    out = list(lines)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "dup", "cut", "insert", "replace", "swap"]))
        i = draw(st.integers(0, len(out) - 1)) if out else 0
        if not out:
            out.append(draw(junk_line))
        elif op == "drop":
            out.pop(i)
        elif op == "dup":
            out.insert(i, out[i])
        elif op == "cut":
            out[i] = out[i][: draw(st.integers(0, max(0, len(out[i]) - 1)))]
        elif op == "insert":
            out.insert(i, draw(junk_line))
        elif op == "replace":
            out[i] = draw(junk_line)
        else:
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
    sep = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    return sep.join(out) + sep


def post(server, kind: str, body: bytes, headers=SDP) -> tuple[int, object]:
    status, reply = http(f"{server.url}/{kind}/default", "POST", body, headers)
    return status, reply


def check(server, kind: str, status: int, reply) -> None:
    assert status < 500, (status, reply)
    if status == 201:  # a survivable offer: tidy the resource up again
        assert isinstance(reply, str) and reply.startswith("v=0")
        return
    assert 400 <= status < 500 and isinstance(reply, dict), (status, reply)
    assert reply["error"] and "\n" not in reply["error"] and "Traceback" not in reply["error"]


def tidy(server) -> None:
    from liveavatar.server.state import SERVICE
    for peer in list(server.app[SERVICE].peers.values()):
        server.call(peer.close())


@pytest.mark.parametrize("kind", ["whip", "whep"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mangled_offers_get_a_clear_answer(server, kind, data):
    body = data.draw(mangled(OFFERS[kind]))
    status, reply = post(server, kind, body.encode("utf-8", "surrogatepass"))
    check(server, kind, status, reply)
    tidy(server)
    assert server.engine.render_loop.is_alive() and server.engine.ready


@pytest.mark.parametrize("kind", ["whip", "whep"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=2048), st.text(max_size=2048).map(lambda t: t.encode("utf-8",
                                                                                              "surrogatepass"))))
def test_arbitrary_bodies_get_a_clear_answer(server, kind, body):
    status, reply = post(server, kind, body)
    check(server, kind, status, reply)
    tidy(server)


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json"}, {"Content-Type": "text/plain"},
                                     {"Content-Type": "application/sdp; charset=utf-16"}])
def test_wrong_content_types_are_refused(server, headers):
    offer = "\r\n".join(OFFERS["whip"]).encode() + b"\r\n"
    status, reply = post(server, "whip", offer, headers)
    if status == 201:  # a charset parameter on application/sdp is still SDP
        tidy(server)
        assert headers.get("Content-Type", "").startswith("application/sdp")
        return
    assert status == 415 and "application/sdp" in reply["error"]


def test_genuine_offers_still_work_after_the_fuzzing(server):
    for kind in ("whip", "whep"):
        status, reply = post(server, kind, ("\r\n".join(OFFERS[kind]) + "\r\n").encode())
        assert status == 201 and "a=fingerprint:" in reply
    tidy(server)
    assert server.engine.sessions["default"].viewers == 0


@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_unknown_resources_and_patch(server, method):
    status, reply = http(f"{server.url}/whip/default/{'0' * 32}", method, b"x", SDP)
    assert status in (404, 405) and "\n" not in reply["error"]
