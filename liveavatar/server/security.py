"""HTTP security: tokens and access levels, the DNS-rebinding and CORS guards, and the error
middleware that makes every failure one line of JSON (4xx for client mistakes, never a traceback)."""
from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from liveavatar.errors import UserError
from liveavatar.server.config import LOOPBACK_NAMES
from liveavatar.server.engine import AdmissionError
from liveavatar.server.state import CONFIG

log = logging.getLogger("liveavatar.server")
#: Access levels: control (emotions, ingest, ...) includes view (state, playback, events).
CONTROL, VIEW = "control", "view"


def error_response(status: int, message: str, code: str | None = None, **extra: Any) -> web.Response:
    body = {"error": message}
    if code:
        body["code"] = code
    body.update(extra)
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
    resp: web.StreamResponse
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
