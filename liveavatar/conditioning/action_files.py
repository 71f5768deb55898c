"""Actions as data: the action file format, the actions folder, and clips ready to play.

An action file is JSON (one per action, `<name>.json`), validated by `ActionFile`:

    {
      "format": "liveavatar-action", "version": 1,
      "name": "floss",                  # lower case letters, digits, _ and -; not a built-in name
      "description": "",                # free text
      "fps": 30.0,                      # frames per second of `frames`
      "loop": false,                    # loop until toggled off (hotkeys) instead of playing once
      "speed": 1.0,                     # playback speed factor
      "parts": "whole",                 # body parts it moves: whole | upper | arms | legs
      "blend_in_s": 0.25, "blend_out_s": 0.35,    # eased in and out over these
      "channels": ["spine", "neck", "upper_arm_l", ..., "lower_leg_r", "root_x", "root_y", "root_scale"],
      "frames": [[...13 numbers...], ...],        # one row per frame, in `channels` order
      "source": {"kind": "bvh", "file": "floss.bvh", "layout": "cmu", ...}   # optional
    }

Bone angles are the character's image-plane directions, radians, as in liveavatar.types.BONES
(0 = pointing down, +pi/2 = to the image's right, +-pi = up); root_x/root_y are the hips'
offset in body heights (x + = image right, y + = down) and root_scale the size (0.5..2), as in
Conditioning.root. Face tracking and lip sync are never part of an action: they keep following
the streamer while it plays.

Where actions live: the user's actions folder (liveavatar.paths.actions_dir()) for imported and
recorded actions; a character pack may carry its own `actions/` folder, which comes first for
that character (it may also redefine a built-in name); the built-in clips are the fallback.
Files are written under a temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from liveavatar.errors import NotFoundError, UserError
from liveavatar.paths import actions_dir
from liveavatar.types import ACTIONS, BONE_INDEX, BONES

from . import bvh
from .retarget import wrap_angle

log = logging.getLogger(__name__)

FORMAT = "liveavatar-action"
CHANNELS: tuple[str, ...] = BONES + ("root_x", "root_y", "root_scale")
N_CH = len(CHANNELS)
NB = len(BONES)
MAX_DURATION_S = 60.0
MAX_FRAMES = 7200            # a minute at 120 fps
MAX_FILE_BYTES = 8 << 20
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
PARTS = ("whole", "upper", "arms", "legs")
_ARMS = ("upper_arm_l", "lower_arm_l", "upper_arm_r", "lower_arm_r")
_LEGS = ("upper_leg_l", "lower_leg_l", "upper_leg_r", "lower_leg_r")
#: Bones each mask moves; root motion goes with the legs (they carry the hips).
PART_BONES: dict[str, tuple[str, ...]] = {"whole": BONES, "upper": ("spine", "neck") + _ARMS,
                                          "arms": _ARMS, "legs": _LEGS}
PART_ROOT = {"whole": True, "upper": False, "arms": False, "legs": True}
Parts = Literal["whole", "upper", "arms", "legs"]


def one_line(s: str, limit: int = 80) -> str:
    s = re.sub(r"[\x00-\x1f\x7f]", "?", str(s))
    return s if len(s) <= limit else s[:limit] + "..."


def check_name(name: str, allow_builtin: bool = False) -> str:
    if not re.match(NAME_PATTERN, name or ""):
        raise UserError(f"action name {one_line(name)!r}: use 1-40 lower-case letters, digits, '_' or '-' "
                        "(starting with a letter or digit)")
    if not allow_builtin and name in ACTIONS:
        raise UserError(f"action name {name!r} is a built-in action; choose another name")
    return name


class ActionSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["bvh", "recorded"]
    file: str | None = Field(None, max_length=300)
    layout: str | None = Field(None, max_length=40)
    projection: dict[str, str] | None = None
    planes_deg: dict[str, float] | None = None
    start_s: float | None = Field(None, ge=0)
    end_s: float | None = Field(None, ge=0)


class ActionFile(BaseModel):
    """One action, as saved. See the module docstring for the format."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    format: Literal["liveavatar-action"] = "liveavatar-action"
    version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=300)
    fps: float = Field(gt=0, le=240)
    loop: bool = False
    speed: float = Field(1.0, ge=0.1, le=10)
    parts: Parts = "whole"
    blend_in_s: float = Field(0.25, ge=0, le=5)
    blend_out_s: float = Field(0.35, ge=0, le=5)
    channels: tuple[str, ...] = CHANNELS
    frames: list[list[float]] = Field(min_length=2, max_length=MAX_FRAMES)
    source: ActionSource | None = None

    @field_validator("channels")
    @classmethod
    def _our_channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(v) != CHANNELS:
            raise ValueError(f"must be {list(CHANNELS)}")
        return v

    @model_validator(mode="after")
    def _frames_in_range(self) -> ActionFile:
        if any(len(r) != N_CH for r in self.frames):
            bad = next(i for i, r in enumerate(self.frames) if len(r) != N_CH)
            raise ValueError(f"frame {bad + 1} has {len(self.frames[bad])} values, expected {N_CH}")
        a = np.asarray(self.frames, np.float64)
        if not np.isfinite(a).all():
            raise ValueError("frames contain NaN or infinite values")
        if np.abs(a[:, :NB]).max() > 4 * np.pi:
            raise ValueError("bone angles must be radians (|angle| <= 4 pi)")
        if np.abs(a[:, NB:NB + 2]).max() > 1.0 or a[:, NB + 2].min() < 0.5 or a[:, NB + 2].max() > 2.0:
            raise ValueError("root_x/root_y must be within -1..1 and root_scale within 0.5..2")
        if self.duration_s > MAX_DURATION_S + 1e-6:
            raise ValueError(f"plays for {self.duration_s:.1f} s; an action is at most {MAX_DURATION_S:g} s")
        return self

    @property
    def duration_s(self) -> float:
        n = len(self.frames)
        return (n if self.loop else n - 1) / self.fps / self.speed

    def array(self) -> np.ndarray:
        return np.asarray(self.frames, np.float32)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "duration_s": round(self.duration_s, 3), "frames": len(self.frames),
                "fps": self.fps, "loop": self.loop, "speed": self.speed, "parts": self.parts,
                "description": self.description,
                "source": self.source.model_dump(exclude_none=True) if self.source else None}


def make_action(name: str, bones: np.ndarray, root: np.ndarray, fps: float, *, loop: bool = False,
                speed: float = 1.0, parts: str = "whole", description: str = "",
                source: ActionSource | None = None, allow_builtin: bool = False) -> ActionFile:
    check_name(name, allow_builtin)
    frames = np.concatenate([wrap_angle(bones.astype(np.float64)), root.astype(np.float64)], axis=1)
    try:
        return ActionFile(name=name, description=description, fps=float(fps), loop=loop, speed=speed,
                          parts=parts, blend_in_s=0.25, blend_out_s=0.35,  # type: ignore[arg-type]
                          frames=np.round(frames, 5).tolist(), source=source)
    except ValidationError as e:
        raise UserError(f"action {name!r}: {_describe(e)}") from None


def _describe(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) < 3)
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


# ---------------------------------------------------------------------------------------------
# Files and folders
# ---------------------------------------------------------------------------------------------

def load_action(path: Path, allow_builtin: bool = False) -> ActionFile:
    label = one_line(str(path), 160)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UserError(f"{label}: larger than {MAX_FILE_BYTES >> 20} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{label}: no such action file") from None
    except OSError as e:
        raise UserError(f"{label}: cannot read: {e.strerror or e}") from None
    try:
        act = ActionFile.model_validate_json(raw)
    except ValidationError as e:
        raise UserError(f"{label}: {_describe(e)}") from None
    if act.name != path.stem:
        raise UserError(f"{label}: names action {act.name!r}; the file must be called {act.name}.json")
    if not allow_builtin and act.name in ACTIONS:
        raise UserError(f"{label}: {act.name!r} is a built-in action name")
    return act


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write under a temporary name in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)   # mkstemp makes it private; an action file is not a secret
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def action_path(name: str, folder: Path | None = None) -> Path:
    return (folder or actions_dir()) / f"{check_name(name, allow_builtin=True)}.json"


def save_action(act: ActionFile, folder: Path | None = None, replace: bool = False) -> Path:
    path = action_path(act.name, folder)
    if path.exists() and not replace:
        raise UserError(f"an action called {act.name!r} exists already ({path}); remove it first or replace it")
    write_atomic(path, act.model_dump_json(exclude_none=True))
    return path


def remove_action(name: str, folder: Path | None = None) -> Path:
    path = action_path(name, folder)
    if name in ACTIONS and not path.exists():
        raise UserError(f"{name!r} is a built-in action; it cannot be removed")
    try:
        path.unlink()
    except FileNotFoundError:
        raise NotFoundError(f"no imported action called {name!r} (in {path.parent})") from None
    return path


def user_action_names(folder: Path | None = None) -> list[str]:
    """Names of the action files in the folder (cheap: no file is read)."""
    folder = folder or actions_dir()
    try:
        return sorted(p.stem for p in folder.glob("*.json") if re.match(NAME_PATTERN, p.stem))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Clips ready to play
# ---------------------------------------------------------------------------------------------

@dataclass
class ActionClip:
    """An action file turned into arrays for the conditioning tick (no allocation when played)."""
    name: str
    frames: np.ndarray      # (n, N_CH) float32
    step: np.ndarray        # (n, N_CH) frame i -> i+1 (angles the short way round; loops wrap)
    fps: float
    loop: bool
    speed: float
    duration_s: float
    blend_in_s: float
    blend_out_s: float
    parts: str
    mask: np.ndarray        # (N_CH,) bool: the channels this action moves
    mask_f: np.ndarray      # the same as float32 weights
    origin: str             # "user" or "character"

    @classmethod
    def from_file(cls, act: ActionFile, origin: str = "user") -> ActionClip:
        f = act.array()
        nxt = np.roll(f, -1, axis=0) if act.loop else np.concatenate([f[1:], f[-1:]])
        step = nxt - f
        step[:, :NB] = wrap_angle(step[:, :NB])
        mask = np.zeros(N_CH, bool)
        mask[[BONE_INDEX[b] for b in PART_BONES[act.parts]]] = True
        mask[NB:] = PART_ROOT[act.parts]
        return cls(act.name, f, step.astype(np.float32), act.fps, act.loop, act.speed, act.duration_s,
                   act.blend_in_s, act.blend_out_s, act.parts, mask, mask.astype(np.float32), origin)

    def sample(self, phase: float, out: np.ndarray) -> np.ndarray:
        """The pose at `phase` (0..1 through the clip) into `out` (N_CH,)."""
        n = len(self.frames)
        pos = phase * (n if self.loop else n - 1)
        i = min(int(pos), n - 1)
        np.multiply(self.step[i], pos - i, out=out)
        out += self.frames[i]
        return out


class ActionLibrary:
    """The clips a conditioner can play beyond the built-ins: a character pack's actions folder
    (first) and the user's actions folder. Re-read when a folder changes (`refresh`)."""

    def __init__(self, user_folder: Path | None = None, character_folder: Path | None = None) -> None:
        self.user_folder = user_folder if user_folder is not None else actions_dir()
        self.character_folder = character_folder
        self.clips: dict[str, ActionClip] = {}     # replaced whole, never mutated: safe to read
        self.errors: list[str] = []
        self._lock = threading.Lock()              # the render thread and the service refresh
        self._stamp: tuple[tuple[str, int | None, int | None], ...] = ()
        self.refresh(force=True)

    def _folders(self) -> list[tuple[Path, str]]:
        out = []
        if self.character_folder is not None:
            out.append((self.character_folder, "character"))
        out.append((self.user_folder, "user"))
        return out

    def _stat(self) -> tuple[tuple[str, int | None, int | None], ...]:
        stamp: list[tuple[str, int | None, int | None]] = []
        for folder, _ in self._folders():
            try:
                st = folder.stat()
                stamp.append((str(folder), st.st_mtime_ns, st.st_ino))
            except OSError:
                stamp.append((str(folder), None, None))
        return tuple(stamp)

    def refresh(self, force: bool = False) -> bool:
        """Reload if a folder changed (a file added, replaced or removed). True if reloaded."""
        with self._lock:
            return self._refresh(force)

    def _refresh(self, force: bool) -> bool:
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        clips: dict[str, ActionClip] = {}
        errors: list[str] = []
        for folder, origin in self._folders():
            for name in user_action_names(folder):
                if name in clips:
                    continue        # the character's own version wins
                try:
                    act = load_action(folder / f"{name}.json", allow_builtin=origin == "character")
                except UserError as e:
                    errors.append(str(e))
                    log.warning("action skipped: %s", e)
                    continue
                clips[name] = ActionClip.from_file(act, origin)
        self.clips, self.errors = clips, errors
        return True

    def set_character_folder(self, folder: Path | None) -> None:
        with self._lock:
            if folder != self.character_folder:
                self.character_folder = folder
                self._refresh(force=True)

    def names(self) -> list[str]:
        return list(self.clips)


class Take:
    """A recording of the conditioner's output motion (bones + root per tick), preallocated.
    `add` is called by the conditioning tick; read the result once `done`."""

    def __init__(self, seconds: float, rate_hz: float) -> None:
        if not 0.5 <= seconds <= MAX_DURATION_S:
            raise UserError(f"a take lasts 0.5 to {MAX_DURATION_S:g} s (got {seconds:g})")
        self.seconds = float(seconds)
        cap = int(seconds * rate_hz * 2) + 8    # room for a faster tick than promised
        self.t = np.zeros(cap, np.float64)
        self.values = np.zeros((cap, N_CH), np.float32)
        self.count = 0
        self.done = False

    def add(self, t_s: float, sample: np.ndarray) -> None:
        if self.done:
            return
        if self.count and (t_s - self.t[0] > self.seconds or self.count == len(self.t)):
            self.done = True
            return
        if self.count and t_s <= self.t[self.count - 1]:
            return
        self.t[self.count] = t_s
        self.values[self.count] = sample
        self.count += 1

    def motion(self, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
        """(bones, root) resampled evenly at `fps`."""
        if self.count < 2:
            raise UserError("the take recorded no motion (is the service rendering?)")
        v = bvh.resample(self.values[:self.count], self.t[:self.count], fps, NB)
        return v[:, :NB], v[:, NB:]


def action_names(builtin: Sequence[str], library: ActionLibrary) -> tuple[str, ...]:
    """Built-ins first (in their order), then the imported ones."""
    return tuple(builtin) + tuple(n for n in library.clips if n not in builtin)


# ---------------------------------------------------------------------------------------------
# BVH in and out
# ---------------------------------------------------------------------------------------------

PLAY_FPS = 30.0   # actions are stored at the conditioning rate


def import_bvh(path: Path, name: str, *, start_s: float = 0.0, end_s: float | None = None,
               loop: bool = False, speed: float = 1.0, parts: str = "whole",
               projection: str | None = None, description: str = "") -> ActionFile:
    """A BVH file -> a validated action (not saved yet). One-line UserError on any problem."""
    check_name(name)
    if parts not in PARTS:
        raise UserError(f"parts {one_line(parts)!r}: use one of {', '.join(PARTS)}")
    if not (np.isfinite(speed) and 0.1 <= speed <= 10):
        raise UserError(f"speed must be between 0.1 and 10 (got {speed:g})")
    planes = bvh.parse_projection(projection)
    motion = bvh.read_bvh(path)
    if not np.isfinite(start_s) or start_s < 0 or (end_s is not None and (not np.isfinite(end_s) or end_s <= start_s)):
        raise UserError(f"--start/--end: need 0 <= start < end (got {start_s:g}, {end_s})")
    first = int(round(start_s / motion.frame_time))
    last = len(motion.frames) if end_s is None else min(len(motion.frames), int(round(end_s / motion.frame_time)) + 1)
    if last - first < 2:
        raise UserError(f"{one_line(str(path))}: --start/--end leave fewer than 2 frames "
                        f"(the file lasts {motion.duration_s:.2f} s)")
    motion.frames = motion.frames[first:last]
    length = (len(motion.frames) - 1) * motion.frame_time / speed
    if length > MAX_DURATION_S:
        raise UserError(f"{one_line(str(path))}: {length:.1f} s of motion; an action is at most "
                        f"{MAX_DURATION_S:g} s: pick a part with --start/--end")
    r = bvh.retarget(motion, planes)
    times = np.arange(len(r.bones)) * motion.frame_time
    v = bvh.resample(np.concatenate([r.bones, r.root], axis=1), times, PLAY_FPS, NB)
    src = ActionSource(kind="bvh", file=one_line(Path(path).name, 200), layout=r.layout, projection=planes,
                       planes_deg=r.planes, start_s=round(first * motion.frame_time, 4),
                       end_s=round((last - 1) * motion.frame_time, 4))
    return make_action(name, v[:, :NB], v[:, NB:], PLAY_FPS, loop=loop, speed=speed, parts=parts,
                       description=description, source=src)


def export_bvh(act: ActionFile) -> str:
    """An action as BVH text (our skeleton in the picture plane, Mixamo joint names)."""
    a = act.array()
    return bvh.export_bvh(a[:, :NB], a[:, NB:], act.fps * act.speed)
