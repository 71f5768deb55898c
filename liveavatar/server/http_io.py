"""Reading requests: the session a route names, and bodies of the one content type it takes."""
from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from liveavatar.server import api

#: Session ids in paths and queries (also the limit on what a client may name one).
SESSION_ID = r"[A-Za-z0-9_.\-]{1,64}"

M = TypeVar("M", bound=BaseModel)


def session_id(request: web.Request) -> str:
    return request.match_info.get("sid") or request.query.get("session", "default")


async def read_body(request: web.Request, content_type: str) -> bytes:
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be {content_type} (got {request.content_type or 'none'})")
    return await request.read()


async def json_body(request: web.Request, model: type[M]) -> M:
    return api.parse(model, await read_body(request, "application/json"))
