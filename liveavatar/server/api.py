"""Control API request models (pydantic) and the OpenAPI document built from them."""
from __future__ import annotations

from typing import Annotated, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from liveavatar.errors import UserError
from liveavatar.types import ACTIONS, ControlEvent, ControlKind, EventSource, TriggerMode

Name = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- control commands: one model each, tagged by `type` (HTTP bodies may leave it out) ----------

class CommandBody(_Body):
    """A control command's body (control.COMMANDS pairs each with its route and handler)."""
    type: str


class EmotionRequest(CommandBody):
    type: Literal["emotion"] = "emotion"
    name: str = Name
    mode: TriggerMode = TriggerMode.MOMENTARY
    hold_s: float = Field(3.0, gt=0, le=3600)
    intensity: float = Field(1.0, ge=0, le=1)
    source: EventSource = EventSource.API

    def event(self) -> ControlEvent:
        return ControlEvent(ControlKind.EMOTION, self.name, self.source, self.mode, self.hold_s,
                            self.intensity)


class ActionRequest(CommandBody):
    type: Literal["action"] = "action"
    name: str = Name
    source: EventSource = EventSource.API

    def event(self) -> ControlEvent:
        return ControlEvent(ControlKind.ACTION, self.name, self.source)


class CharacterRequest(CommandBody):
    type: Literal["character"] = "character"
    name: str = Name
    source: EventSource = EventSource.API


class CalibrateRequest(CommandBody):
    type: Literal["calibrate"] = "calibrate"
    source: EventSource = EventSource.API


class HotkeyRequest(CommandBody):
    type: Literal["hotkey"] = "hotkey"
    name: str = Field(min_length=1, max_length=128, examples=["liveavatar.emotion.happy"])
    session: str = Field("default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")


#: A control command as the events WebSocket receives it: {"type": "emotion", "name": ...}.
ControlCommand = Annotated[EmotionRequest | ActionRequest | CharacterRequest | CalibrateRequest | HotkeyRequest,
                           Field(discriminator="type")]
CONTROL_COMMAND: TypeAdapter[ControlCommand] = TypeAdapter(ControlCommand)
COMMAND_MODELS: dict[str, type[CommandBody]] = {
    m.model_fields["type"].default: m for m in get_args(get_args(ControlCommand)[0])}


class FeedRequest(_Body):
    kind: Literal["mpegts"] = "mpegts"
    url: str = Field(min_length=1, max_length=512, examples=["udp://127.0.0.1:5600"])


class OkState(BaseModel):
    ok: bool = True
    state: dict


class ErrorBody(BaseModel):
    error: str
    code: str | None = None


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: bytes) -> M:
    """Validate a JSON body; problems become one line naming the field (HTTP 422)."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        raise _one_line(e) from None


def parse_command(raw: bytes) -> ControlCommand:
    """Validate a tagged control command (its `type` is known to be one of the union's)."""
    try:
        return CONTROL_COMMAND.validate_json(raw)
    except ValidationError as e:
        raise _one_line(e, tagged=True) from None


def _one_line(e: ValidationError, tagged: bool = False) -> UserError:
    err = e.errors()[0]
    loc = err["loc"][1:] if tagged and err["type"] != "json_invalid" else err["loc"]  # drop the union's tag
    where = ".".join(str(p) for p in loc)
    msg = err["msg"]
    if err["type"] == "json_invalid":
        return UserError(f"request body is not valid JSON: {err.get('ctx', {}).get('error', msg)}")
    got = where and "input" in err and not isinstance(err["input"], dict)
    exc = UserError(f"{where or 'body'}: {msg}" + (f" (got {err['input']!r})" if got else ""))
    exc.http_status = 422
    return exc


def _schema(models: list[type[BaseModel]]) -> dict:
    out = {}
    for m in models:
        s = m.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in s.pop("$defs", {}).items():
            out[name] = sub
        out[m.__name__] = s
    return out


def openapi(version: str, actions: tuple[str, ...] | list[str] = ACTIONS) -> dict:
    def body(model: str) -> dict:
        return {"required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}

    def ok(description: str = "OK", schema: str = "OkState") -> dict:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}

    errors = {
        "400": ok("Bad request (unknown name, malformed input)", "ErrorBody"),
        "401": ok("Missing or wrong token", "ErrorBody"),
        "404": ok("No such session / character", "ErrorBody"),
        "413": ok("Body too large", "ErrorBody"),
        "415": ok("Wrong Content-Type", "ErrorBody"),
        "422": ok("Body fails validation", "ErrorBody"),
    }
    sid = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "Session id; 'default' is the plain studio/viewer/OBS session."}

    sdp = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
    created = {"201": {"description": "SDP answer; Location names the resource to DELETE",
                       "content": {"application/sdp": {"schema": {"type": "string"}}}},
               "503": ok("At the session limit or warming up", "ErrorBody"), **errors}
    from liveavatar.server import actions as action_routes
    from liveavatar.server import control  # the command table: its routes, models and summaries
    paths = {
        "/api/sessions/{sid}/state": {"get": {"summary": "Conditioning state, character, controls and stats",
                                              "parameters": [sid], "responses": {"200": {"description": "state"},
                                                                                 **errors}}},
        "/api/sessions": {"get": {"summary": "Live sessions", "responses": {"200": {"description": "list"}}}},
        "/api/sessions/{sid}/feeds": {
            "post": {"summary": "Start the low-latency MPEG-TS feed of the avatar (what OBS's media source reads)",
                     "parameters": [sid], "requestBody": body("FeedRequest"),
                     "responses": {"200": {"description": "feed started"}, **errors}},
            "delete": {"summary": "Stop the session's feeds", "parameters": [sid],
                       "responses": {"200": {"description": "stopped"}}}},
        "/api/sessions/{sid}/frame.png": {"get": {"summary": "Latest rendered avatar frame (RGBA PNG)",
                                                  "parameters": [sid],
                                                  "responses": {"200": {"description": "PNG",
                                                                        "content": {"image/png": {}}}, **errors}}},
        "/api/events": {"get": {"summary": "WebSocket event stream: control events, voice keywords, stats (1 Hz), "
                                           "cues on request. Clients may send "
                                           f"{{type: {'|'.join([*control.COMMANDS, 'subscribe'])}, ...}}.",
                                "parameters": [{"name": "session", "in": "query", "schema": {"type": "string",
                                                                                             "default": "default"}}],
                                "responses": {"101": {"description": "WebSocket upgrade"}}}},
        "/health": {"get": {"summary": "200 when warmed up, 503 before; generator, devices and providers really in use",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "warming up"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition"}}}},
        "/whip/{sid}": {"post": {"summary": "WHIP ingest (RFC 9725): camera + microphone offer in, answer out",
                                 "parameters": [sid], "requestBody": sdp, "responses": created}},
        "/whep/{sid}": {"post": {"summary": "WHEP egress: play the avatar feed with the streamer's voice. "
                                           "?layout=packed gives colour|alpha side by side (our viewer page).",
                                 "parameters": [sid], "requestBody": sdp, "responses": created}},
    }
    paths.update(control.openapi_paths(sid, body, ok, errors))
    paths.update(action_routes.openapi_paths(sid, body, ok, errors))
    models: list[type[BaseModel]] = [*(c.model for c in control.COMMANDS.values()),
                                     FeedRequest, OkState, ErrorBody, *action_routes.MODELS]
    schemas = _schema(models)
    names = [a for a in actions if a != "none"]
    if names:   # built-in and imported actions alike, as the default session plays them
        prop = schemas["ActionRequest"]["properties"]["name"]
        prop["examples"] = names
        prop["description"] = "Action to play: " + ", ".join(names) + " (or 'none' to stop)"
    return {
        "openapi": "3.1.0",
        "info": {"title": "LiveAvatar control API", "version": version,
                 "description": "Drive a live avatar: emotions, actions, characters, calibration; "
                                "WHIP ingest and WHEP playback. Studio keys, OBS hotkeys and voice "
                                "keywords all become the same control events."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "Required when the service binds beyond localhost "
                                                                     "(or --token is set); ?token= works too."}}},
    }
