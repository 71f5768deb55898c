"""Publishing into a Janus WebRTC gateway (VideoRoom plugin, WebSocket API), so that viewers
subscribe through Janus and the service sends each session's picture and voice once
(`serve --sfu janus:ws://HOST:8188[/ROOM]`).

One job: Janus signalling and a self-healing publisher. Which tracks are published is up to the
caller (`attach` adds them to the peer connection), so this module knows nothing of sessions.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("liveavatar.janus")

VIDEOROOM = "janus.plugin.videoroom"
#: The room sessions are published in when `--sfu` names none.
DEFAULT_ROOM = 2718
#: Janus forgets a session after 60 s of silence (its session_timeout): ping well inside that.
KEEPALIVE_S = 25.0
REQUEST_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
#: Reconnect delays after a loss: doubling, capped, so a dead Janus costs one attempt per 30 s.
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
ROOM_EXISTS = 427           # JANUS_VIDEOROOM_ERROR_ROOM_EXISTS: another publisher made it first


@dataclass(frozen=True)
class JanusTarget:
    url: str            # ws://host:port/ of Janus's WebSocket transport
    room: int

    def __str__(self) -> str:
        return f"{self.url} room {self.room}"


def parse_sfu(value: str) -> JanusTarget:
    """`janus:ws://HOST:8188[/ROOM]` (or wss://) -> JanusTarget; ValueError with one line otherwise."""
    usage = "use janus:ws://HOST:8188[/ROOM] (ROOM: a VideoRoom number)"
    shown = value.encode("unicode_escape").decode()[:200]
    if not value.startswith("janus:"):
        raise ValueError(f"{shown!r}: unknown SFU; {usage}")
    parts = urllib.parse.urlsplit(value[len("janus:"):])
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown!r}: bad port; {usage}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or any(c.isspace() for c in value):
        raise ValueError(f"{shown!r}: not a Janus WebSocket address; {usage}")
    room_text = parts.path.strip("/")
    room = DEFAULT_ROOM
    if room_text:
        if not room_text.isdigit() or not 0 < int(room_text) < 2**53:
            raise ValueError(f"{shown!r}: room {room_text[:40]!r} must be a positive number; {usage}")
        room = int(room_text)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}" if port else host
    return JanusTarget(f"{parts.scheme}://{netloc}/", room)


class JanusError(Exception):
    """Janus refused a request, did not answer, or the connection is gone."""


class JanusSession:
    """One Janus session over one WebSocket: requests matched to replies by transaction,
    events without a transaction (hangup, detached, ...) recorded per handle, and keepalives."""

    def __init__(self, http: Any, ws: Any, session_id: int) -> None:
        self._http, self._ws, self.id = http, ws, session_id
        self._pending: dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self.closed = asyncio.Event()
        self.hangups: dict[int, str] = {}         # handle id -> why Janus hung up its PeerConnection
        self.hangup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def connect(cls, url: str) -> JanusSession:
        import aiohttp
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S))
        try:
            # Janus's WebSocket transport refuses clients that do not ask for this subprotocol.
            ws = await http.ws_connect(url, protocols=("janus-protocol",), autoping=True,
                                       max_msg_size=4 * 1024 * 1024)
            self = cls(http, ws, 0)
            self._tasks.append(asyncio.ensure_future(self._read()))
            reply = await self._send({"janus": "create"})
            self.id = int(reply["data"]["id"])
            self._tasks.append(asyncio.ensure_future(self._keepalive()))
            return self
        except BaseException:
            await http.close()
            raise

    def _transaction(self) -> str:
        return f"la{next(self._ids)}-{secrets.token_hex(4)}"

    async def _send(self, msg: dict, timeout: float = REQUEST_TIMEOUT_S) -> dict:
        if self.closed.is_set():
            raise JanusError("the connection to Janus is closed")
        tx = self._transaction()
        msg = {**msg, "transaction": tx}
        if self.id:
            msg["session_id"] = self.id
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[tx] = fut
        try:
            await self._ws.send_json(msg)
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:     # not yet the builtin TimeoutError on Python 3.10
            raise JanusError(f"Janus did not answer {msg['janus']!r} within {timeout:.0f} s") from None
        except (ConnectionError, RuntimeError) as e:   # aiohttp: the socket closed under us
            raise JanusError(f"the connection to Janus failed: {e}") from None
        finally:
            self._pending.pop(tx, None)
        if reply.get("janus") == "error":
            err = reply.get("error", {})
            raise JanusError(f"Janus error {err.get('code')}: {err.get('reason')}")
        return reply

    async def _read(self) -> None:
        from aiohttp import WSMsgType
        try:
            async for m in self._ws:
                if m.type != WSMsgType.TEXT:
                    continue
                try:
                    msg = m.json()
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                kind = msg.get("janus")
                if kind == "ack" and msg.get("transaction") in self._pending:
                    continue   # the real reply ("event" with the same transaction) follows
                fut = self._pending.get(msg.get("transaction", ""))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif kind in ("hangup", "detached") and "sender" in msg:
                    self.hangups[int(msg["sender"])] = str(msg.get("reason", kind))
                    self.hangup.set()
                elif kind == "timeout":
                    break
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(JanusError("the connection to Janus closed"))

    async def _keepalive(self) -> None:
        # Janus answers a keepalive with a bare "ack", so nothing is awaited but the send.
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.closed.is_set():
                await asyncio.sleep(KEEPALIVE_S)
                await self._ws.send_json({"janus": "keepalive", "session_id": self.id,
                                          "transaction": self._transaction()})

    async def attach(self, plugin: str = VIDEOROOM) -> int:
        reply = await self._send({"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def message(self, handle: int, body: dict, jsep: dict | None = None,
                      timeout: float = REQUEST_TIMEOUT_S) -> tuple[dict, dict | None]:
        """A plugin request -> (the plugin's data, the JSEP Janus sent with it, if any)."""
        msg: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self._send(msg, timeout)
        data = reply.get("plugindata", {}).get("data", {})
        if "error_code" in data or "error" in data:
            raise PluginError(int(data.get("error_code", 0)), str(data.get("error", "error")))
        return data, reply.get("jsep")

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            if not self.closed.is_set():
                await asyncio.wait_for(self._ws.send_json({"janus": "destroy", "session_id": self.id,
                                                           "transaction": self._transaction()}), 2)
        with contextlib.suppress(Exception):
            await self._ws.close()
        await self._http.close()
        self.closed.set()


class PluginError(JanusError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"VideoRoom error {code}: {reason}")
        self.code = code


async def ensure_room(js: JanusSession, handle: int, room: int, pin: str | None) -> None:
    """Create the room unless it exists: VP8 + Opus (what the service sends), no bitrate cap
    (the one shared encode does not adapt to REMB anyway), a PLI to the publisher every 2 s at
    most (Janus also forwards each new subscriber's PLI, so joiners get a keyframe at once)."""
    data, _ = await js.message(handle, {"request": "exists", "room": room})
    if data.get("exists"):
        return
    body: dict[str, Any] = {"request": "create", "room": room, "description": "LiveAvatar",
                            "publishers": 64, "videocodec": "vp8", "audiocodec": "opus",
                            "bitrate": 0, "fir_freq": 2, "notify_joining": False, "permanent": False}
    if pin:
        body["pin"] = pin
    try:
        await js.message(handle, body)
    except PluginError as e:
        if e.code != ROOM_EXISTS:
            raise


class JanusPublisher:
    """Keeps one stream published in a VideoRoom as participant `display`: connect, publish,
    wait for a loss (Janus gone, a hangup, ICE failed), tear down, and retry with bounded
    backoff. The first failure of a run of failures logs one warning; retries log at debug.

    `attach(pc)` adds the tracks to a fresh RTCPeerConnection and returns a release function;
    `make_pc()` makes that connection (ICE servers as the service's)."""

    def __init__(self, target: JanusTarget, display: str, make_pc: Callable[[], Any],
                 attach: Callable[[Any], Callable[[], None]], pin: str | None = None) -> None:
        self.target, self.display, self.pin = target, display, pin
        self._make_pc, self._attach = make_pc, attach
        self.live = False
        self.feed: int | None = None
        self.attempts = 0
        self.losses = 0
        self.last_error = ""
        self._task: asyncio.Task | None = None

    def start(self) -> JanusPublisher:
        self._task = asyncio.ensure_future(self.run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        failures = 0
        while True:
            self.attempts += 1
            was_published = False
            try:
                async for _ in self._publish_once():
                    was_published = True
                    if failures:
                        log.info("janus %s: session %r published again (feed %s)", self.target,
                                 self.display, self.feed)
                    else:
                        log.info("janus %s: session %r published (feed %s)", self.target, self.display,
                                 self.feed)
                    failures = 0
                reason = "Janus hung up"
            except asyncio.CancelledError:
                raise
            except (JanusError, OSError, TimeoutError, ValueError, KeyError) as e:
                reason = str(e) or type(e).__name__
            except Exception as e:      # aiohttp's and aiortc's own errors: never let one end the retries
                reason = f"{type(e).__name__}: {e}"
            self.last_error = reason
            if was_published:
                self.losses += 1
            if failures == 0:
                log.warning("janus %s: session %r not published (%s); viewers are served directly "
                            "meanwhile, retrying every %.0f s at most", self.target, self.display,
                            reason, BACKOFF_S[-1])
            else:
                log.debug("janus %s: retry %d for %r failed: %s", self.target, failures, self.display, reason)
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
            failures += 1

    async def _publish_once(self) -> Any:
        """An async generator that yields once when the stream is up, and returns when it is lost."""
        from aiortc import RTCSessionDescription
        js = await JanusSession.connect(self.target.url)
        pc = None
        release: Callable[[], None] | None = None
        try:
            handle = await js.attach()
            await ensure_room(js, handle, self.target.room, self.pin)
            join: dict[str, Any] = {"request": "join", "ptype": "publisher", "room": self.target.room,
                                    "display": self.display}
            if self.pin:
                join["pin"] = self.pin
            data, _ = await js.message(handle, join)
            feed = int(data["id"])
            pc = self._make_pc()
            release = self._attach(pc)
            failed = asyncio.Event()
            connected = asyncio.Event()

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected":
                    connected.set()
                elif pc.connectionState in ("failed", "closed"):
                    failed.set()

            await pc.setLocalDescription(await pc.createOffer())
            _, jsep = await js.message(handle, {"request": "publish", "audiocodec": "opus", "videocodec": "vp8",
                                                "display": self.display},
                                       jsep={"type": "offer", "sdp": pc.localDescription.sdp})
            if not jsep or jsep.get("type") != "answer":
                raise JanusError("Janus sent no answer to the publish offer")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
            await _first(CONNECT_TIMEOUT_S, "ICE with Janus did not connect", connected.wait(),
                         failed.wait(), js.closed.wait())
            if not connected.is_set():
                raise JanusError("ICE with Janus failed" if failed.is_set() else "the connection to Janus closed")
            self.feed, self.live = feed, True
            yield feed
            await _first(None, "", failed.wait(), js.closed.wait(), js.hangup.wait())
            if js.closed.is_set():
                raise JanusError("the connection to Janus closed")
            if failed.is_set():
                raise JanusError("the media connection to Janus failed")
        finally:
            self.live = False
            if release is not None:
                release()
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
            await js.close()

    def info(self) -> dict[str, Any]:
        return {"live": self.live, "feed": self.feed if self.live else None, "attempts": self.attempts,
                "losses": self.losses, "last_error": self.last_error}


async def _first(timeout: float | None, timeout_message: str, *waits: Any) -> None:
    """Wait until the first of `waits` finishes (the rest are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise JanusError(timeout_message)
    finally:
        for t in tasks:
            t.cancel()


async def subscriber_offer(target: JanusTarget, feed: int, pin: str | None = None) -> tuple[JanusSession, int, str]:
    """Join `feed` as a subscriber: (the Janus session, the handle, Janus's SDP offer). Janus 1.1's
    VideoRoom always makes the offer to a subscriber; `start_subscriber` gives it the answer."""
    js = await JanusSession.connect(target.url)
    try:
        handle = await js.attach()
        join: dict[str, Any] = {"request": "join", "ptype": "subscriber", "room": target.room,
                                "streams": [{"feed": feed}]}
        if pin:
            join["pin"] = pin
        _, jsep = await js.message(handle, join)
        if not jsep or jsep.get("type") != "offer":
            raise JanusError("Janus sent no offer for the subscription")
        return js, handle, str(jsep["sdp"])
    except BaseException:
        await js.close()
        raise


async def start_subscriber(js: JanusSession, handle: int, answer_sdp: str) -> None:
    await js.message(handle, {"request": "start"}, jsep={"type": "answer", "sdp": answer_sdp})


async def subscribe(target: JanusTarget, feed: int, pc: Any, pin: str | None = None) -> JanusSession:
    """Subscribe `pc` (an aiortc RTCPeerConnection, its on("track") handler already set) to a
    publisher's feed: Janus offers, we answer. Returns the Janus session; close it to leave."""
    from aiortc import RTCSessionDescription
    js, handle, offer = await subscriber_offer(target, feed, pin)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await start_subscriber(js, handle, pc.localDescription.sdp)
        return js
    except BaseException:
        await js.close()
        raise
