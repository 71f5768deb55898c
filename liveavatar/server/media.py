"""aiortc glue: peer connections, the session's shared encoder, SDP helpers."""
from __future__ import annotations

import re

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from liveavatar.output.webrtc import SharedEncoder
from liveavatar.server.config import ServerConfig
from liveavatar.server.engine import Session


def new_peer_connection(cfg: ServerConfig) -> RTCPeerConnection:
    """No ICE servers unless configured: aiortc's default public STUN server would stall
    offline machines (see notes/webrtc-browser-tests.md)."""
    servers = []
    if cfg.ice_servers:
        servers = [RTCIceServer(urls=cfg.ice_servers, username=cfg.ice_username,
                                credential=cfg.ice_credential)]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def shared_encoder_for(session: Session, cfg: ServerConfig, strip_rows: int) -> SharedEncoder:
    """The session's one VP8 encode of its packed frames, started on first use."""
    if session.shared_encoder is None:
        session.shared_encoder = SharedEncoder(session.sid, session.engine.loop, session.timer, 2 * cfg.size,
                                               cfg.size + strip_rows, cfg.fps)
        session.shared_encoder.start()
    return session.shared_encoder


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
    from liveavatar.errors import UserError
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
