"""Character routes for the studio's "New character" flow and rig editor.

    GET  /api/characters                 every character (name, kind, shipped, editable)
    POST /api/characters                 multipart: name, picture (+ display_name, licence, author):
                                         import it; 422 when no figure is found, and with
                                         manual=1 the whole picture with a rig to place by hand
    GET  /api/characters/{name}/rig      the pack's character.json (canvas, joints, face, ...)
    PUT  /api/characters/{name}/rig      {joints, face[, framing, display_name]}: validated by the pack
                                         schema, saved atomically; the generator re-prepares it
    GET  /api/characters/{name}/art.png  the pack's art (its layers composited), for the editor

Imports and saves run in the engine's setup pool, never on the event loop. Client mistakes are
4xx with a one-line JSON error (the app's errors middleware turns UserError into that).
"""
from __future__ import annotations

import asyncio
import io
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from liveavatar.errors import NotFoundError, UserError

#: Largest picture accepted by upload (a PSD with many layers can be big; pictures are checked
#: again from their header before decoding).
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
NAME = r"[a-z0-9][a-z0-9_\-]{0,63}"
_EDITABLE = ("joints", "face", "framing", "display_name")

class UploadTooLargeError(UserError):
    http_status = 413


Require = Callable[[web.Request, bool], object]    # (request, write access needed) -> raises if refused


def add_routes(app: web.Application, engine_key: web.AppKey[Any], require: Require) -> None:
    """Register the routes; `require(request, write)` checks the caller's token."""
    routes = _Routes(engine_key, require)
    r = app.router
    r.add_get("/api/characters", routes.list)
    r.add_post("/api/characters", routes.upload)
    r.add_get(f"/api/characters/{{name:{NAME}}}/rig", routes.get_rig)
    r.add_put(f"/api/characters/{{name:{NAME}}}/rig", routes.put_rig)
    r.add_get(f"/api/characters/{{name:{NAME}}}/art.png", routes.art)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _mesh_entry(name: str) -> Any:
    from liveavatar.generation.characters import find
    entry = find(name)
    if entry.kind != "mesh":
        raise UserError(f"{name!r} is a {entry.kind} character: only imported (mesh) characters have a rig to edit")
    return entry


def _composite_png(folder: Path) -> bytes:
    from PIL import Image

    from liveavatar.generation.mesh import pack
    from liveavatar.paths import safe_join
    m = pack.read_manifest(folder)
    canvas = Image.new("RGBA", (m.canvas[0], m.canvas[1]), (0, 0, 0, 0))
    for spec in sorted(m.layers, key=lambda la: la.z):
        with Image.open(safe_join(folder, spec.file, what="layer")) as im:
            canvas.alpha_composite(im.convert("RGBA"))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _apply_edit(folder: Path, body: Any) -> dict[str, Any]:
    from liveavatar.authoring.importer import save_manifest
    from liveavatar.generation.mesh import pack
    if not isinstance(body, dict):
        raise UserError("the rig must be a JSON object with joints and face")
    unknown = [k for k in body if k not in _EDITABLE and k not in ("name", "canvas", "format", "kind")]
    if unknown:
        raise UserError(f"unknown rig field {_one_line(unknown[0])!r}; editable: {', '.join(_EDITABLE)}")
    current = pack.read_manifest(folder)
    raw = current.model_dump(mode="json")
    for key in _EDITABLE:
        if key in body:
            raw[key] = body[key]
    if body.get("face") is not None and isinstance(raw["face"], dict):
        raw["face"].setdefault("detected_by", "user")
        raw["face"]["detected_by"] = "user"
    try:
        edited = pack.MeshManifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise UserError(_one_line(f"invalid rig: {key}: {err['msg']}")) from None
    save_manifest(folder, edited)
    return edited.model_dump(mode="json")


class _Routes:
    def __init__(self, engine_key: web.AppKey[Any], require: Require) -> None:
        self.engine_key = engine_key
        self.require = require

    async def _run(self, request: web.Request, fn: Callable[..., Any], *args: Any) -> Any:
        engine = request.app[self.engine_key]
        return await asyncio.get_running_loop().run_in_executor(engine.pool, fn, *args)

    async def list(self, request: web.Request) -> web.Response:
        self.require(request, False)
        from liveavatar.generation.characters import catalog
        cat = await self._run(request, catalog)
        engine = request.app[self.engine_key]
        live = set(engine.characters())
        return web.json_response({"characters": [
            {"name": e.name, "kind": e.kind, "shipped": e.shipped, "editable": e.kind == "mesh",
             "live": e.name in live} for e in cat.values()], "max_upload_bytes": MAX_UPLOAD_BYTES})

    async def upload(self, request: web.Request) -> web.Response:
        self.require(request, True)
        if not request.content_type.startswith("multipart/"):
            raise web.HTTPUnsupportedMediaType(text="send the picture as multipart/form-data (fields: name, "
                                                    f"picture), got {request.content_type or 'none'}")
        fields: dict[str, str] = {}
        tmpdir = Path(tempfile.mkdtemp(prefix="liveavatar-upload-"))
        picture: Path | None = None
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise UserError("nested multipart bodies are not accepted")
                if part.name == "picture":
                    suffix = re.sub(r"[^a-z0-9.]", "", Path(part.filename or "picture").suffix.lower())[:8]
                    picture = tmpdir / f"upload{suffix}"
                    await self._save_part(part, picture)
                elif part.name in ("name", "display_name", "licence", "author", "manual"):
                    raw = b""
                    while chunk := await part.read_chunk(1024):
                        raw += chunk
                        if len(raw) > 1024:   # read no further: a text field is short
                            raise UserError(f"field {part.name!r} is too long (at most 1024 bytes)")
                    fields[part.name] = raw.decode("utf-8", errors="replace").strip()
                else:
                    raise UserError(f"unknown form field {_one_line(part.name)!r}; send name and picture")
            if picture is None:
                raise UserError("no picture in the form (field 'picture')")
            if not fields.get("name"):
                raise UserError("no character name in the form (field 'name')")
            from liveavatar.authoring.importer import DEFAULT_LICENCE, import_character
            src = picture

            def run_import() -> Any:
                return import_character(src, fields["name"], display_name=fields.get("display_name", ""),
                                        licence=fields.get("licence") or DEFAULT_LICENCE,
                                        author=fields.get("author", ""),
                                        manual=fields.get("manual", "") in ("1", "true", "yes"))
            res = await self._run(request, run_import)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return web.json_response({"ok": True, "name": res.manifest.name, "method": res.method,
                                  "joints_by": res.joints_by, "seconds": round(res.seconds, 2),
                                  "rig": res.manifest.model_dump(mode="json")}, status=201)

    async def _save_part(self, part: BodyPartReader, dest: Path) -> None:
        size = 0
        with dest.open("wb") as f:
            while True:
                chunk = await part.read_chunk(256 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise UploadTooLargeError(f"picture too large (limit {MAX_UPLOAD_BYTES // (1024 * 1024)} MB)")
                f.write(chunk)

    async def get_rig(self, request: web.Request) -> web.Response:
        self.require(request, False)
        from liveavatar.generation.mesh import pack
        entry = _mesh_entry(request.match_info["name"])
        m = await self._run(request, pack.read_manifest, entry.folder)
        return web.json_response(m.model_dump(mode="json"))

    async def put_rig(self, request: web.Request) -> web.Response:
        self.require(request, True)
        name = request.match_info["name"]
        entry = _mesh_entry(name)
        if entry.shipped:
            raise UserError(f"{name!r} is a shipped character; import a copy to edit its rig")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be application/json "
                                                    f"(got {request.content_type or 'none'})")
        try:
            body = await request.json()
        except ValueError as e:
            raise UserError(f"the rig is not valid JSON ({_one_line(e)})") from None
        saved = await self._run(request, _apply_edit, entry.folder, body)
        engine = request.app[self.engine_key]
        reloaded = False
        if engine.generator is not None and name in engine.characters():
            # The generator reloads a pack whose character.json changed; sessions showing it switch
            # to the new rig on the next frame.
            await self._run(request, engine.generator.prepare_character, name)
            reloaded = True
        return web.json_response({"ok": True, "rig": saved, "reloaded": reloaded})

    async def art(self, request: web.Request) -> web.Response:
        self.require(request, False)
        entry = _mesh_entry(request.match_info["name"])
        try:
            png = await self._run(request, _composite_png, entry.folder)
        except OSError as e:
            raise NotFoundError(f"{entry.folder}: art missing ({_one_line(e)})") from None
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-cache"})
