"""Server settings (validated with pydantic) and the stored access tokens."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from liveavatar.errors import ConfigError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ServerConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    generator: str = "auto"          # rig2d or mesh, chosen per character
    character: str | None = None  # new sessions start as this character (default: nova)
    device: str | None = None
    workers: str | None = None        # auto or ray://HOST:PORT: the generator on Ray Serve replicas
    worker_replicas: int | None = Field(None, ge=1, le=256)   # default: one per GPU in the cluster
    size: int = Field(512, ge=64, le=2048)
    fps: int = Field(30, ge=1, le=120)
    max_sessions: int = Field(4, ge=1, le=64)
    # torch CPU threads for rendering: with perception, encoding and WebRTC on the same cores,
    # a second thread mostly waits at barriers (on a busy machine: 130 ms a frame vs 16 ms).
    render_threads: int = Field(1, ge=1, le=64)
    token: str | None = None          # control + ingest
    viewer_token: str | None = None   # read-only: viewer page, WHEP, state, frame.png
    ice_servers: list[str] = []          # stun:/turn: URLs; none by default (works offline)
    ice_username: str | None = None
    ice_credential: str | None = None
    source: Path | None = None        # drive the default session from this media file
    demo: bool = True                    # play the bundled demo clip when no camera comes
    demo_after_s: float = Field(5.0, ge=0)
    timecode: bool = False               # debug timecode in the flat (WHEP) feed too
    allow_origins: list[str] = []        # extra CORS origins beyond our own
    max_body_bytes: int = 256 * 1024
    session_idle_s: float = 60.0         # forget a session nobody uses after this long
    keywords: list[str] = ["dance", "jump", "wave"]   # when the mapping names none
    mapping: Path | None = None       # conditioning mapping file (default: the shipped one)
    # VTuber interop (liveavatar/interop), all off by default; they drive the default session.
    vmc_out: str | None = None        # HOST:PORT of a VMC receiver (VSeeFace, Warudo: 39539)
    vmc_bundle: bool = True              # one OSC bundle per frame (False: single messages)
    vmc_arkit: bool = False              # also ARKit's blendshape names
    vmc_in: int | None = Field(None, ge=1, le=65535)   # UDP port for a VMC tracker's stream
    vts_port: int | None = Field(None, ge=1, le=65535)  # VTube Studio-style API on 127.0.0.1
    # Publish each session once into this SFU for its viewers (janus:ws://HOST:8188[/ROOM]).
    sfu: str | None = None

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("size must be even (video encoders need even dimensions)")
        return v

    @field_validator("ice_servers")
    @classmethod
    def _ice(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"ICE server {url!r} must start with stun:, turn: or turns:")
        return v

    @field_validator("sfu")
    @classmethod
    def _sfu(cls, v: str | None) -> str | None:
        if v is not None:
            from liveavatar.interop.janus import parse_sfu
            parse_sfu(v)
        return v

    @property
    def loopback_only(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def auth_required(self) -> bool:
        return self.token is not None


def build(**values: Any) -> ServerConfig:
    """ServerConfig from CLI values, with pydantic's complaint turned into one line."""
    try:
        return ServerConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"server option {key}: {err['msg']}") from None


def config_dir() -> Path:
    base = os.environ.get("LIVEAVATAR_CONFIG_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "liveavatar"


def tokens_path() -> Path:
    return config_dir() / "server-tokens.json"


def load_or_create_tokens(path: Path | None = None) -> tuple[str, str, bool]:
    """(control token, viewer token, created_now). Tokens are generated once and kept in
    `path` (mode 0600) so the streamer's bookmarks and OBS settings keep working."""
    path = path or tokens_path()
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return str(data["token"]), str(data["viewer_token"]), False
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: unreadable token file ({e}); delete it to make new tokens") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    token, viewer = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "viewer_token": viewer}, f)
    return token, viewer, True
