"""The aiohttp application: pages, control API, WHIP/WHEP, WebSocket events, health, metrics."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from liveavatar.errors import NotFoundError, UserError
from liveavatar.interop import service as interop
from liveavatar.output.webrtc import AvatarTrack, SharedVideoTrack, VoiceTrack
from liveavatar.paths import assets_dir
from liveavatar.server import actions, api, characters, metrics, sfu
from liveavatar.server.config import LOOPBACK_NAMES, ServerConfig
from liveavatar.server.engine import STRIP_ROWS, AdmissionError, Engine, Session, Stages, real_stages
from liveavatar.server.media import (
    FFMPEG_WHIP_HINT,
    add_bitrate_hints,
    check_offer,
    looks_like_ffmpeg_whip,
    new_peer_connection,
    shared_encoder_for,
)
from liveavatar.sources.webrtc import drain_audio, drain_video, use_low_latency_jitter_buffers
from liveavatar.types import ControlEvent, ControlKind, EventSource

log = logging.getLogger("liveavatar.server")
STATIC = Path(__file__).resolve().parent / "static"
ENGINE = web.AppKey("engine", Engine)
CONFIG = web.AppKey("config", ServerConfig)
STATE = web.AppKey("state", dict)
CONTROL, VIEW = "control", "view"
SESSION_ID = r"[A-Za-z0-9_.\-]{1,64}"


# ---------------------------------------------------------------------------------------------
# Errors, security, CORS
# ---------------------------------------------------------------------------------------------

def error_response(status: int, message: str, code: str | None = None, **extra: Any) -> web.Response:
    body = {"error": message}
    if code:
        body["code"] = code
    body.update(extra)
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> Any:
    """Every failure leaves as JSON with one line; client mistakes are 4xx, never tracebacks."""
    try:
        return await handler(request)
    except AdmissionError as e:
        resp = error_response(e.http_status, str(e), e.code, **{k: v for k, v in e.details.items()})
        resp.headers["Retry-After"] = str(e.details.get("retry_after_s", 5))
        return resp
    except UserError as e:
        return error_response(e.http_status, str(e))
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        text = e.text if e.text and not e.text.startswith(str(e.status)) else e.reason
        if e.status == 413:
            text = f"request body too large (limit {request.app[CONFIG].max_body_bytes} bytes)"
        resp = error_response(e.status, text)
        for h in ("Allow", "WWW-Authenticate", "Accept-Post"):
            if h in e.headers:
                resp.headers[h] = e.headers[h]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (see the service log)")


def _own_origins(request: web.Request) -> set[str]:
    host = request.host
    return {f"http://{host}", f"https://{host}"}


@web.middleware
async def security_middleware(request: web.Request, handler: Any) -> Any:
    cfg = request.app[CONFIG]
    # DNS-rebinding guard: an open (token-less) loopback service only answers loopback names.
    if not cfg.auth_required:
        hostname = request.host.rsplit(":", 1)[0].strip("[]") if request.host else ""
        if hostname and hostname not in LOOPBACK_NAMES:
            return error_response(403, f"host {request.host!r} refused: this service is bound to "
                                       "localhost without a token")
    origin = request.headers.get("Origin")
    allowed = origin is None or origin in _own_origins(request) or origin in cfg.allow_origins
    if not allowed:
        return error_response(403, f"origin {origin!r} is not allowed (CORS is limited to this "
                                   "service's own pages; see --allow-origin)")
    if request.method == "OPTIONS":
        resp = web.Response(status=204)
        resp.headers["Accept-Post"] = "application/sdp"
    else:
        resp = await handler(request)
    if origin and origin in cfg.allow_origins:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, PATCH, OPTIONS"
        resp.headers["Access-Control-Expose-Headers"] = "Location"
        resp.headers["Vary"] = "Origin"
    return resp


def presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query.get("token")


def access_level(request: web.Request) -> str | None:
    cfg = request.app[CONFIG]
    if not cfg.auth_required:
        return CONTROL
    tok = presented_token(request)
    if tok is None:
        return None
    if cfg.token and hmac.compare_digest(tok.encode(), cfg.token.encode()):
        return CONTROL
    if cfg.viewer_token and hmac.compare_digest(tok.encode(), cfg.viewer_token.encode()):
        return VIEW
    return None


def require(request: web.Request, level: str) -> str:
    got = access_level(request)
    if got is None:
        what = "missing token" if presented_token(request) is None else "wrong token"
        raise web.HTTPUnauthorized(text=f"{what}: send 'Authorization: Bearer <token>' or ?token=",
                                   headers={"WWW-Authenticate": 'Bearer realm="liveavatar"'})
    if level == CONTROL and got != CONTROL:
        raise web.HTTPForbidden(text="this token is read-only (viewer token); control needs the control token")
    return got


def session_id(request: web.Request) -> str:
    return request.match_info.get("sid") or request.query.get("session", "default")


async def read_body(request: web.Request, content_type: str) -> bytes:
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be {content_type} (got {request.content_type or 'none'})")
    return await request.read()


async def json_body(request: web.Request, model: Any) -> Any:
    return api.parse(model, await read_body(request, "application/json"))


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------

async def page(request: web.Request) -> web.FileResponse:
    name = request.match_info["page"]
    resp = web.FileResponse(STATIC / f"{name}.html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/studio" + (f"?{request.query_string}" if request.query_string else ""))


# ---------------------------------------------------------------------------------------------
# Health, metrics, OpenAPI
# ---------------------------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    # Ready means warmed up *and* the default session exists, so a hotkey sent right after a
    # 200 (OBS script, Stream Deck) always finds its session.
    ready = eng.ready and request.app[STATE]["outputs_ready"].is_set() and "default" in eng.sessions
    return web.json_response(eng.health(), status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    require(request, VIEW)
    body = metrics.exposition(request.app[STATE]["registry"])
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def client_config(request: web.Request) -> web.Response:
    """What our pages need before they make an offer: ICE servers (for remote use), sizes."""
    require(request, VIEW)
    cfg = request.app[CONFIG]
    ice = []
    if cfg.ice_servers:
        entry: dict[str, Any] = {"urls": cfg.ice_servers}
        if cfg.ice_username:
            entry.update(username=cfg.ice_username, credential=cfg.ice_credential or "")
        ice.append(entry)
    return web.json_response({"ice_servers": ice, "fps": cfg.fps, "size": cfg.size,
                              "strip_rows": STRIP_ROWS})


async def openapi_handler(request: web.Request) -> web.Response:
    from liveavatar import __version__ as version
    s = request.app[ENGINE].sessions.get("default")
    actions = getattr(s.conditioner, "actions", None) if s else None   # imported ones too
    return web.json_response(api.openapi(version) if actions is None else api.openapi(version, actions))


# ---------------------------------------------------------------------------------------------
# Control API
# ---------------------------------------------------------------------------------------------

def controls(session: Session) -> dict:
    """Studio keys: 1-9 for emotions, a free letter per action (shown on the page)."""
    emotions = list(getattr(session.conditioner, "emotions", ()))
    actions = [a for a in getattr(session.conditioner, "actions", ()) if a != "none"]
    used: set[str] = set()
    action_keys = []
    for a in actions:
        key = next((c for c in a.lower() if c.isalpha() and c not in used), "")
        if not key:
            key = next((c for c in "abcdefghijklmnopqrstuvwxyz" if c not in used), "")
        used.add(key)
        action_keys.append({"name": a, "key": key})
    return {"emotions": [{"name": e, "key": str(i + 1) if i < 9 else ""} for i, e in enumerate(emotions)],
            "actions": action_keys}


def full_state(request: web.Request, session: Session) -> dict:
    eng = request.app[ENGINE]
    return {**session.state(), "characters": eng.characters(), "controls": controls(session)}


async def control_session(request: web.Request) -> Session:
    require(request, CONTROL)
    return request.app[ENGINE].get(session_id(request))


def check_name(kind: str, name: str, known: Any) -> None:
    known = list(known)
    if known and name not in known:
        raise UserError(f"unknown {kind} {name!r}; known: {', '.join(known)}")


async def emotion(request: web.Request) -> web.Response:
    s = await control_session(request)
    body = await json_body(request, api.EmotionRequest)
    check_name("emotion", body.name, getattr(s.conditioner, "emotions", ()))
    return web.json_response({"ok": True, "state": await s.state_after(s.control(body.event()))})


async def action(request: web.Request) -> web.Response:
    s = await control_session(request)
    body = await json_body(request, api.ActionRequest)
    check_name("action", body.name, getattr(s.conditioner, "actions", ()))
    return web.json_response({"ok": True, "state": await s.state_after(s.control(body.event()))})


async def character(request: web.Request) -> web.Response:
    s = await control_session(request)
    body = await json_body(request, api.CharacterRequest)
    state = await request.app[ENGINE].set_character(s, body.name, body.source)
    return web.json_response({"ok": True, "state": state})


async def calibrate(request: web.Request) -> web.Response:
    s = await control_session(request)
    body = await json_body(request, api.CalibrateRequest)
    n = s.control(ControlEvent(ControlKind.CALIBRATE, "", body.source))
    return web.json_response({"ok": True, "state": await s.state_after(n)})


def resolve_hotkey(session: Session, name: str) -> list[ControlEvent]:
    """OBS-style names (liveavatar.emotion.<name>, liveavatar.action.<name>, or a key of the
    mapping's [hotkeys]) -> the same control events as studio keys and the API."""
    events = list(session.conditioner.hotkey_events(name))
    if not events:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "liveavatar" and parts[1] in ("emotion", "action"):
            check_name(parts[1], parts[2], getattr(session.conditioner, parts[1] + "s", ()))
        raise UserError(f"unknown hotkey {name!r}; use liveavatar.emotion.<name>, "
                        "liveavatar.action.<name> or a key of the mapping's [hotkeys]")
    for ev in events:
        ev.source = EventSource.HOTKEY
    return events


async def apply_all(session: Session, events: list[ControlEvent]) -> dict:
    n = 0
    for ev in events:
        n = session.control(ev)
    return await session.state_after(n)


async def hotkey(request: web.Request) -> web.Response:
    require(request, CONTROL)
    body = await json_body(request, api.HotkeyRequest)
    s = request.app[ENGINE].get(body.session)
    return web.json_response({"ok": True, "state": await apply_all(s, resolve_hotkey(s, body.name))})


async def state(request: web.Request) -> web.Response:
    require(request, VIEW)
    s = request.app[ENGINE].get(session_id(request))
    st = full_state(request, s)
    st["stats"] = request.app[STATE]["stats"].get(s.sid, {})
    return web.json_response(st)


async def sessions_list(request: web.Request) -> web.Response:
    require(request, VIEW)
    eng = request.app[ENGINE]
    return web.json_response({"sessions": [{"session": sid, "camera": bool(s.ingest), "viewers": s.viewers,
                                            "character": s.character} for sid, s in eng.sessions.items()],
                              "max_sessions": eng.cfg.max_sessions})


async def frame_png(request: web.Request) -> web.Response:
    require(request, VIEW)
    eng = request.app[ENGINE]
    s = eng.get(session_id(request))
    for _ in range(20):  # a brand-new session renders its first frame within a tick or two
        if s.latest is not None:
            break
        await asyncio.sleep(0.05)
    frame = s.latest
    if frame is None:
        raise NotFoundError(f"session {s.sid!r} has not rendered a frame yet")

    def encode() -> bytes:
        import cv2
        ok, buf = cv2.imencode(".png", cv2.cvtColor(frame.rgba, cv2.COLOR_RGBA2BGRA))
        return buf.tobytes()

    png = await asyncio.get_running_loop().run_in_executor(eng.pool, encode)
    return web.Response(body=png, content_type="image/png",
                        headers={"X-Capture-Ns": str(frame.t_capture_ns), "X-Frame-Seq": str(frame.seq)})


async def feeds_start(request: web.Request) -> web.Response:
    s = await control_session(request)
    body = await json_body(request, api.FeedRequest)
    info = await start_feed(request.app, s, body.url)
    return web.json_response({"ok": True, "feed": info})


async def start_feed(app: web.Application, s: Session, url: str) -> dict:
    eng = app[ENGINE]
    try:
        from liveavatar.output.mpegts import MpegTsFeed, receiver_url
    except ImportError as e:
        raise UserError(f"the MPEG-TS feed is not available in this build ({e})") from None
    sink = MpegTsFeed(url, eng.cfg.size, eng.cfg.size, eng.cfg.fps, background=eng.flat_bg)
    await asyncio.get_running_loop().run_in_executor(eng.pool, sink.start)
    old = s.sinks.pop("mpegts", None)
    s.sinks["mpegts"] = sink
    if old is not None:
        await asyncio.get_running_loop().run_in_executor(eng.pool, old.stop)
    return {"kind": "mpegts", "url": url, "reader_url": receiver_url(url), "width": eng.cfg.size,
            "height": eng.cfg.size, "fps": eng.cfg.fps}


async def feeds_stop(request: web.Request) -> web.Response:
    s = await control_session(request)
    stopped = []
    for name in [n for n in s.sinks if n != "virtualcam"]:
        sink = s.sinks.pop(name)
        await asyncio.get_running_loop().run_in_executor(request.app[ENGINE].pool, sink.stop)
        stopped.append(name)
    return web.json_response({"ok": True, "stopped": stopped})


# ---------------------------------------------------------------------------------------------
# WebRTC: WHIP ingest and WHEP egress (RFC 9725 style: POST application/sdp -> 201 + Location)
# ---------------------------------------------------------------------------------------------

async def _close_quietly(pc: Any) -> None:
    """aiortc's close() itself raises on a peer connection that a broken offer left half-built
    (no transport); the client must still get its 4xx, not a 500."""
    try:
        await pc.close()
    except Exception:
        log.debug("closing a half-built peer connection failed", exc_info=True)


async def _answer(request: web.Request, kind: str, setup: Any) -> web.Response:
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
    resources = request.app[STATE]["resources"]
    resources[rid] = (kind, sid, pc)

    async def closed() -> Any:
        if resources.pop(rid, None) is not None:
            cleanup()
            await pc.close()

    @pc.on("connectionstatechange")
    async def on_state() -> Any:
        if pc.connectionState == "failed" and kind == "whip" and looks_like_ffmpeg_whip(sdp):
            log.warning(FFMPEG_WHIP_HINT)  # why and the fix: media.FFMPEG_WHIP_HINT
        if pc.connectionState in ("failed", "closed"):
            await closed()

    request.app[STATE]["closers"][rid] = closed
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
    eng = request.app[ENGINE]

    def setup(pc: Any, s: Session, offer: str) -> Any:
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

        old = s.ingest
        s.ingest, s.ingest_kind, s.ever_had_camera = pc, "webrtc", True
        eng.stop_file(s)  # a real camera replaces the demo / --source file
        if old is not None:
            asyncio.ensure_future(old.close())
        s.publish_event({"type": "camera", "session": s.sid, "connected": True})

        def cleanup() -> Any:
            for t in tasks:
                t.cancel()
            if s.ingest is pc:  # the avatar idles; a reconnect attaches a new ingest
                s.ingest, s.ingest_kind = None, ""
                s.publish_event({"type": "camera", "session": s.sid, "connected": False})
        return cleanup

    return await _answer(request, "whip", setup)


async def whep(request: web.Request) -> web.Response:
    require(request, VIEW)
    layout = request.query.get("layout", "flat")
    if layout not in ("flat", "packed"):
        raise UserError(f"unknown layout {layout!r}; use flat or packed")
    relay: MediaRelay = request.app[STATE]["relay"]

    def setup(pc: Any, s: Session, offer: str) -> Any:
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise UserError("the offer receives no video (add a recvonly video transceiver)")
        if s.voice is None:
            s.voice = VoiceTrack(s)
        video = next(t for t in pc.getTransceivers() if t.kind == "video")
        if layout == "packed" and "VP8/90000" in offer:
            # Our pages: every viewer shares one VP8 encode of the session.
            shared_encoder_for(s, request.app[CONFIG], STRIP_ROWS)
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType.lower() in ("video/vp8", "video/rtx")])
            track = SharedVideoTrack(s.shared_encoder)
            track.sender = pc.addTrack(track)
        else:
            # Standard players may want H.264: frames are relayed and each sender encodes.
            src = s.out_tracks.get(layout)
            if src is None:
                src = s.out_tracks[layout] = AvatarTrack(s.publisher, layout)
            pc.addTrack(relay.subscribe(src, buffered=False))
        if "audio" in kinds:
            # The voice is encoded once, to Opus, for every viewer (media.VoiceTrack).
            if "opus/48000" not in offer.lower():
                raise UserError("the offer's audio has no Opus (opus/48000/2): the voice is sent as Opus only")
            audio = next(t for t in pc.getTransceivers() if t.kind == "audio")
            audio.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                       if c.mimeType.lower() == "audio/opus"])
            voice = pc.addTrack(relay.subscribe(s.voice, buffered=False))
            # Its own media stream id, so the browser plays the picture as soon as it can instead
            # of holding it for the (longer) audio buffer; we align them (engine.VOICE_LEAD_MS).
            # aiortc has no API for the msid of an answer's track, hence the private attribute.
            voice._stream_id = f"{s.sid}-voice-{uuid.uuid4().hex[:8]}"
        if layout == "packed":
            s.want_packed += 1
        else:
            s.want_flat += 1
        s.viewers += 1

        def cleanup() -> Any:
            s.viewers -= 1
            if layout == "packed":
                s.want_packed -= 1
            else:
                s.want_flat -= 1
        return cleanup

    return await _answer(request, "whep", setup)


async def resource_delete(request: web.Request) -> web.Response:
    kind = request.match_info["kind"]
    require(request, CONTROL if kind == "whip" else VIEW)
    rid = request.match_info["rid"]
    closer = request.app[STATE]["closers"].pop(rid, None)
    entry = request.app[STATE]["resources"].get(rid)
    if closer is None or entry is None or entry[0] != kind or entry[1] != request.match_info["sid"]:
        raise NotFoundError(f"no {kind.upper()} resource {rid!r}")
    await closer()
    return web.Response(status=200)


async def resource_patch(request: web.Request) -> web.Response:
    # RFC 9725: a resource without trickle ICE / ICE restart answers 405 to PATCH.
    raise web.HTTPMethodNotAllowed("PATCH", ["DELETE"], text="trickle ICE is not supported; "
                                   "send the offer with all candidates gathered")


# ---------------------------------------------------------------------------------------------
# WebSocket event stream
# ---------------------------------------------------------------------------------------------

def cues_overlay(cues: Any) -> dict:
    """Compact landmarks for the studio's tracking overlay (x, y rounded, present parts only)."""
    def part(p: Any, step: Any = 1) -> Any:
        if p is None or not p.present:
            return None
        return np.round(p.landmarks[::step, :2], 3).tolist()
    return {"type": "cues", "seq": cues.seq, "pose": part(cues.pose), "face": part(cues.face, 3),
            "hand_left": part(cues.hand_left), "hand_right": part(cues.hand_right),
            "speaking": round(float(cues.voice.speaking_prob), 2)}


async def ws_message(app: web.Application, s: Session, level: str, msg: dict, sub: dict) -> dict:
    kind = msg.get("type")
    if kind == "subscribe":
        want = bool(msg.get("cues"))
        if want != sub["cues"]:
            s.cue_subscribers += 1 if want else -1
            sub["cues"] = want
        return {"type": "ack", "request": "subscribe"}
    if kind == "ping":
        return {"type": "pong", "t": msg.get("t")}
    if level != CONTROL:
        raise UserError("this token is read-only (viewer token)")
    fields = {k: v for k, v in msg.items() if k not in ("type", "id")}
    raw = json.dumps(fields).encode()
    if kind == "emotion":
        emotion = api.parse(api.EmotionRequest, raw)
        check_name("emotion", emotion.name, getattr(s.conditioner, "emotions", ()))
        state = await s.state_after(s.control(emotion.event()))
    elif kind == "action":
        action = api.parse(api.ActionRequest, raw)
        check_name("action", action.name, getattr(s.conditioner, "actions", ()))
        state = await s.state_after(s.control(action.event()))
    elif kind == "character":
        character = api.parse(api.CharacterRequest, raw)
        state = await app[ENGINE].set_character(s, character.name, character.source)
    elif kind == "calibrate":
        calibrate = api.parse(api.CalibrateRequest, raw)
        state = await s.state_after(s.control(ControlEvent(ControlKind.CALIBRATE, "", calibrate.source)))
    elif kind == "hotkey":
        hotkey = api.parse(api.HotkeyRequest, raw)
        state = await apply_all(s, resolve_hotkey(s, hotkey.name))
    else:
        raise UserError(f"unknown message type {kind!r}; use emotion, action, character, calibrate, "
                        "hotkey, subscribe or ping")
    return {"type": "ack", "request": kind, "state": state}


async def events_ws(request: web.Request) -> web.WebSocketResponse:
    level = require(request, VIEW)
    eng = request.app[ENGINE]
    sid = request.query.get("session", "default")
    s = eng.get(sid)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=64 * 1024)
    await ws.prepare(request)
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)
    s.subscribers.add(queue)
    sub = {"cues": False}

    async def sender() -> Any:
        while True:
            ev = await queue.get()
            await ws.send_json(ev)

    send_task = asyncio.ensure_future(sender())
    try:
        await ws.send_json({"type": "hello", "session": sid, "access": level,
                            "state": full_state(request, s), "fps": eng.cfg.fps})
        async for m in ws:
            if m.type != WSMsgType.TEXT:
                continue
            reply_id = None
            try:
                msg = json.loads(m.data)
                if not isinstance(msg, dict):
                    raise UserError("messages must be JSON objects")
                reply_id = msg.get("id")
                reply = await ws_message(request.app, s, level, msg, sub)
            except ValueError as e:
                reply = {"type": "error", "error": f"message is not valid JSON: {e}"}
            except UserError as e:
                reply = {"type": "error", "error": str(e)}
            if reply_id is not None:
                reply["id"] = reply_id
            await ws.send_json(reply)
    finally:
        send_task.cancel()
        s.subscribers.discard(queue)
        if sub["cues"]:
            s.cue_subscribers -= 1
    return ws


# ---------------------------------------------------------------------------------------------
# Background tasks: stats (1 Hz), overlay cues (10 Hz), idle sessions, the demo fallback
# ---------------------------------------------------------------------------------------------

async def stats_task(app: web.Application) -> None:
    eng = app[ENGINE]
    while True:
        await asyncio.sleep(1.0)
        stats = {}
        for sid, s in list(eng.sessions.items()):
            st = s.stats()
            stats[sid] = st
            s.publish_event(st)
        app[STATE]["stats"] = stats
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
        for name, url in app[STATE]["startup_feeds"]:
            try:
                if name == "mpegts":
                    await start_feed(app, s, url)
                elif name == "virtualcam":
                    from liveavatar.output.virtualcam import VirtualCamSink
                    sink = VirtualCamSink(cfg.size, cfg.size, cfg.fps)
                    await asyncio.get_running_loop().run_in_executor(eng.pool, sink.start)
                    s.sinks["virtualcam"] = sink
            except (UserError, ImportError) as e:
                log.error("%s output not started: %s", name, e)
                app[STATE]["startup_errors"].append(f"{name}: {e}")
        try:  # VMC out/in, the VTube Studio-style API (serve --vmc-out/--vmc-in/--vts-port)
            await interop.start_for(app, s)
        except UserError as e:
            log.error("interop not started: %s", e)
            app[STATE]["startup_errors"].append(str(e))
    except Exception as e:  # e.g. perception cannot start: `serve` reports it and exits
        log.exception("the default session could not start")
        app[STATE]["startup_errors"].append(f"default session: {e}")
        return
    finally:
        app[STATE]["outputs_ready"].set()
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
    st = app[STATE]
    app[ENGINE].loop = asyncio.get_running_loop()
    st["relay"] = MediaRelay()
    st["outputs_ready"] = asyncio.Event()
    st["tasks"] = [asyncio.ensure_future(startup_task(app)), asyncio.ensure_future(stats_task(app)),
                   asyncio.ensure_future(cues_task(app)), asyncio.ensure_future(loop_lag_task(app))]


async def on_shutdown(app: web.Application) -> None:
    st = app[STATE]
    for t in st["tasks"]:
        t.cancel()
    for closer in list(st["closers"].values()):
        await closer()
    st["closers"].clear()
    await app[ENGINE].stop()


# ---------------------------------------------------------------------------------------------

def create_app(cfg: ServerConfig, stages: Stages | None = None,
               feeds: list[tuple[str, str]] | None = None) -> web.Application:
    app = web.Application(middlewares=[security_middleware, errors_middleware],
                          client_max_size=cfg.max_body_bytes)
    engine = Engine(cfg, stages or real_stages(cfg), None)  # loop: bound at startup
    app[CONFIG] = cfg
    app[ENGINE] = engine
    app[STATE] = {"resources": {}, "closers": {}, "stats": {}, "tasks": [],
                  "registry": metrics.make_registry(engine), "startup_feeds": list(feeds or []),
                  "startup_errors": []}
    r = app.router
    r.add_get("/", index)
    r.add_get("/favicon.ico", no_content)
    r.add_get("/{page:studio|viewer}", page)
    r.add_static("/static", STATIC, append_version=False)
    r.add_get("/health", health)
    r.add_get("/metrics", metrics_handler)
    r.add_get("/api/openapi.json", openapi_handler)
    r.add_get("/api/config", client_config)
    r.add_get("/api/events", events_ws)
    r.add_get("/api/sessions", sessions_list)
    r.add_get(f"/api/sessions/{{sid:{SESSION_ID}}}/state", state)
    r.add_get(f"/api/sessions/{{sid:{SESSION_ID}}}/frame.png", frame_png)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/emotion", emotion)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/action", action)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/character", character)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/calibrate", calibrate)
    r.add_post(f"/api/sessions/{{sid:{SESSION_ID}}}/feeds", feeds_start)
    r.add_delete(f"/api/sessions/{{sid:{SESSION_ID}}}/feeds", feeds_stop)
    r.add_post("/api/hotkey", hotkey)
    characters.add_routes(app, ENGINE, lambda req, write: require(req, CONTROL if write else VIEW))
    r.add_post(f"/whip/{{sid:{SESSION_ID}}}", whip)
    r.add_post(f"/whep/{{sid:{SESSION_ID}}}", whep)
    r.add_delete(f"/{{kind:whip|whep}}/{{sid:{SESSION_ID}}}/{{rid:[0-9a-f]{{32}}}}", resource_delete)
    r.add_patch(f"/{{kind:whip|whep}}/{{sid:{SESSION_ID}}}/{{rid:[0-9a-f]{{32}}}}", resource_patch)
    actions.register(app)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    interop.attach(app, engine, cfg)
    sfu.attach(app, engine, cfg, lambda req: require(req, VIEW), SESSION_ID)
    return app
