"""Signalling: WHIP ingest and WHEP playback (RFC 9725 style: POST application/sdp -> 201 with
a Location to DELETE), and the SDP checks and hints around aiortc's offer/answer."""
from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from liveavatar.errors import NotFoundError, UserError
from liveavatar.output.webrtc import SharedVideoTrack
from liveavatar.server.config import ServerConfig
from liveavatar.server.http_io import read_body
from liveavatar.server.security import CONTROL, VIEW, require
from liveavatar.server.session import Session
from liveavatar.server.state import CONFIG, ENGINE, SERVICE, PeerResource
from liveavatar.sources.webrtc import drain_audio, drain_video, use_low_latency_jitter_buffers

log = logging.getLogger("liveavatar.server")


def new_peer_connection(cfg: ServerConfig) -> RTCPeerConnection:
    """No ICE servers unless configured: aiortc's default public STUN server would stall
    offline machines (see notes/webrtc-browser-tests.md)."""
    servers = []
    if cfg.ice_servers:
        servers = [RTCIceServer(urls=cfg.ice_servers, username=cfg.ice_username,
                                credential=cfg.ice_credential)]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


# ---------------------------------------------------------------------------------------------
# SDP
# ---------------------------------------------------------------------------------------------

_RTPMAP = re.compile(r"a=rtpmap:(\d+) (VP8|VP9|H264)/90000", re.I)
_FMTP = re.compile(r"a=fmtp:(\d+) (.*)")


def add_bitrate_hints(sdp: str, min_kbps: int = 800, start_kbps: int = 1000, max_kbps: int = 2500) -> str:
    """Tell Chromium (the sender) to keep a usable bitrate: aiortc's REMB otherwise holds it at
    300-700 kbps and the camera drops to 320x240, which hurts tracking."""
    hint = f"x-google-min-bitrate={min_kbps};x-google-start-bitrate={start_kbps};x-google-max-bitrate={max_kbps}"
    lines = sdp.replace("\r\n", "\n").split("\n")
    video_pts = {m.group(1) for line in lines if (m := _RTPMAP.match(line))}
    with_fmtp = set()
    out = []
    for line in lines:
        m = _FMTP.match(line)
        if m and m.group(1) in video_pts:
            line = f"{line};{hint}"
            with_fmtp.add(m.group(1))
        out.append(line)
    final = []
    for line in out:
        final.append(line)
        m = _RTPMAP.match(line)
        if m and m.group(1) not in with_fmtp:
            final.append(f"a=fmtp:{m.group(1)} {hint}")
    return "\r\n".join(final)


def check_offer(sdp: str) -> None:
    """Cheap structural checks before aiortc sees the offer, so garbage gets a clear 400."""
    text = sdp.strip()
    if not text.startswith("v=0"):
        raise UserError("malformed SDP offer: it must start with 'v=0'")
    if "\nm=" not in text.replace("\r\n", "\n"):
        raise UserError("malformed SDP offer: no media section (m=audio / m=video)")
    if "a=fingerprint:" not in text:
        raise UserError("malformed SDP offer: no DTLS fingerprint (a=fingerprint)")
    if "a=ice-ufrag:" not in text:
        raise UserError("malformed SDP offer: no ICE credentials (a=ice-ufrag)")


# FFmpeg's WHIP muxer (`-f whip`, FFmpeg 8) as built into the PyAV wheel (TLS via GnuTLS) makes
# its own DTLS certificate on an ECDSA P-224 key (seen in its handshake). The OpenSSL that
# aiortc runs on (the cryptography wheel's, 4.x) no longer knows P-224 as a TLS group, so the
# handshake stops with illegal_parameter
# (wrong curve) whichever side is the DTLS client: FFmpeg then reports "DTLS session failed"
# with its default role and with whip_flags=dtls_active alike. ICE, the SDP and the SRTP
# profiles are fine; nothing in the answer can change the muxer's key. A P-256 certificate
# given to the muxer (its cert_file / key_file options) gets through and the camera reaches the
# avatar (tests/interop/test_ffmpeg_whip.py).
FFMPEG_WHIP_HINT = ("a WHIP publisher that looks like FFmpeg's muxer failed the DTLS handshake: its own "
                    "certificate is ECDSA P-224, which this service's OpenSSL refuses; give it a P-256 "
                    "certificate with -cert_file/-key_file (see the README, 'WHIP with FFmpeg')")


def looks_like_ffmpeg_whip(offer_sdp: str) -> bool:
    return "s=FFmpegPublishSession" in offer_sdp or "\no=FFmpeg " in offer_sdp.replace("\r\n", "\n")


# ---------------------------------------------------------------------------------------------
# WHIP and WHEP
# ---------------------------------------------------------------------------------------------

async def _close_quietly(pc: RTCPeerConnection) -> None:
    """aiortc's close() itself raises on a peer connection that a broken offer left half-built
    (no transport); the client must still get its 4xx, not a 500."""
    try:
        await pc.close()
    except Exception:
        log.debug("closing a half-built peer connection failed", exc_info=True)


#: Attaches what an offer asks for (drains, tracks) to its session; returns how to undo it.
Setup = Callable[[RTCPeerConnection, Session, str], Callable[[], None]]


async def _answer(request: web.Request, kind: str, setup: Setup) -> web.Response:
    sdp = (await read_body(request, "application/sdp")).decode("utf-8", "replace")
    check_offer(sdp)
    eng = request.app[ENGINE]
    sid = request.match_info["sid"]
    s = await eng.get_or_create(sid)
    pc = new_peer_connection(eng.cfg)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    except Exception as e:
        await _close_quietly(pc)
        raise UserError(f"malformed SDP offer: {type(e).__name__}: {e}") from None
    cleanup = None
    try:
        cleanup = setup(pc, s, sdp)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as e:
        # Undo what setup attached (drain tasks, ingest, viewer counts) before refusing.
        if cleanup is not None:
            cleanup()
        await _close_quietly(pc)
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot answer this SDP offer: {type(e).__name__}: {e}") from None
    rid = uuid.uuid4().hex
    peers = request.app[SERVICE].peers

    async def closed() -> None:
        if peers.pop(rid, None) is not None:
            cleanup()
            await pc.close()

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState == "failed" and kind == "whip" and looks_like_ffmpeg_whip(sdp):
            log.warning(FFMPEG_WHIP_HINT)  # why and the fix: see FFMPEG_WHIP_HINT
        if pc.connectionState in ("failed", "closed"):
            await closed()

    peers[rid] = PeerResource(kind, sid, pc, closed)
    answer_sdp = pc.localDescription.sdp
    if kind == "whip":
        answer_sdp = add_bitrate_hints(answer_sdp)
    location = f"/{kind}/{sid}/{rid}"
    resp = web.Response(status=201, text=answer_sdp, content_type="application/sdp",
                        headers={"Location": location, "ETag": f'"{rid}"'})
    for link in ice_links(request.app[CONFIG]):  # RFC 9725 section 4.6: ICE servers for the client
        resp.headers.add("Link", link)
    return resp


def ice_links(cfg: ServerConfig) -> list[str]:
    links = []
    for url in cfg.ice_servers:
        link = f'<{url}>; rel="ice-server"'
        if url.startswith("turn") and cfg.ice_username:
            link += (f'; username="{cfg.ice_username}"; credential="{cfg.ice_credential or ""}"'
                     '; credential-type="password"')
        links.append(link)
    return links


async def whip(request: web.Request) -> web.Response:
    require(request, CONTROL)

    def setup(pc: RTCPeerConnection, s: Session, offer: str) -> Callable[[], None]:
        if not any(t.kind in ("video", "audio") for t in pc.getTransceivers()):
            raise UserError("the offer sends no audio or video")
        use_low_latency_jitter_buffers(pc)
        # aiortc made the remote tracks while applying the offer; read them from now on.
        tasks = []
        for t in pc.getTransceivers():
            track = t.receiver.track if t.receiver else None
            if track is not None:
                drain = drain_video if track.kind == "video" else drain_audio
                tasks.append(asyncio.ensure_future(drain(track, s)))

        s.attach_ingest(pc, "webrtc")   # a real camera replaces the demo / --source file

        def cleanup() -> None:
            for t in tasks:
                t.cancel()
            s.detach_ingest(pc)
        return cleanup

    return await _answer(request, "whip", setup)


async def whep(request: web.Request) -> web.Response:
    require(request, VIEW)
    layout = request.query.get("layout", "flat")
    if layout not in ("flat", "packed"):
        raise UserError(f"unknown layout {layout!r}; use flat or packed")
    relay = request.app[SERVICE].relay

    def setup(pc: RTCPeerConnection, s: Session, offer: str) -> Callable[[], None]:
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise UserError("the offer receives no video (add a recvonly video transceiver)")
        voice = s.voice_track()
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        if layout == "packed" and "VP8/90000" in offer:
            # Our pages: every viewer shares one VP8 encode of the session.
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType.lower() in ("video/vp8", "video/rtx")])
            track = SharedVideoTrack(s.shared_encoder_for_viewers())
            track.sender = pc.addTrack(track)
        else:
            # Standard players may want H.264: frames are relayed and each sender encodes.
            pc.addTrack(relay.subscribe(s.avatar_track(layout), buffered=False))
        if "audio" in kinds:
            # The voice is encoded once, to Opus, for every viewer (output.webrtc.VoiceTrack).
            if "opus/48000" not in offer.lower():
                raise UserError("the offer's audio has no Opus (opus/48000/2): the voice is sent as Opus only")
            audio = next(t for t in pc.getTransceivers() if t.kind == "audio")
            audio.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                       if c.mimeType.lower() == "audio/opus"])
            sender = pc.addTrack(relay.subscribe(voice, buffered=False))
            # Its own media stream id, so the browser plays the picture as soon as it can instead
            # of holding it for the (longer) audio buffer; we align them (session.VOICE_LEAD_MS).
            # aiortc has no API for the msid of an answer's track, hence the private attribute.
            sender._stream_id = f"{s.sid}-voice-{uuid.uuid4().hex[:8]}"
        s.add_viewer(layout)
        return lambda: s.remove_viewer(layout)

    return await _answer(request, "whep", setup)


async def resource_delete(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    require(request, CONTROL if kind == "whip" else VIEW)
    rid = request.match_info["rid"]
    peer = request.app[SERVICE].peers.get(rid)
    if peer is None or peer.kind != kind or peer.sid != request.match_info["sid"]:
        raise NotFoundError(f"no {kind.upper()} resource {rid!r}")
    await peer.close()
    return web.Response(status=200)


async def resource_patch(request: web.Request) -> web.Response:
    # RFC 9725: a resource without trickle ICE / ICE restart answers 405 to PATCH.
    raise web.HTTPMethodNotAllowed("PATCH", ["DELETE"], text="trickle ICE is not supported; "
                                   "send the offer with all candidates gathered")
