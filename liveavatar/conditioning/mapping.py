"""The mapping file: keywords / hotkeys / gestures -> triggers, thresholds, blend times, mirroring.

The bundled default_mapping.toml is the single source of defaults and their documentation. A
user file is merged over it (section by section, see the file's header) and validated with
pydantic; any problem becomes one ConfigError line naming the file and the key.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from liveavatar.errors import ConfigError
from liveavatar.types import ACTIONS, EMOTIONS, EventSource, TriggerMode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

DEFAULT_MAPPING_PATH = Path(__file__).resolve().parent / "default_mapping.toml"

#: Trigger priority by source: what the streamer asked for explicitly (a hotkey, the studio, the
#: API, OBS) outranks a spoken keyword, which outranks a recognised gesture (both happen "in
#: passing"). A lower-ranked trigger never undoes a higher-ranked one that is still on: an emotion
#: plays beneath it (and shows once it ends), an action does not interrupt it. Equal ranks: the
#: newest wins.
TRIGGER_RANK: dict[EventSource, int] = {EventSource.GESTURE: 0, EventSource.VOICE: 1}
EXPLICIT_RANK = 2


def trigger_rank(source: EventSource) -> int:
    return TRIGGER_RANK.get(source, EXPLICIT_RANK)
GESTURES: tuple[str, ...] = ("wave", "nod", "head_shake", "clap", "cheer", "point")
SOURCES: tuple[str, ...] = ("trigger", "face", "voice")
# Sections whose tables replace the default wholesale (so a user can drop a default keyword);
# every other section is merged key by key over the defaults.
_REPLACED_SECTIONS = ("keywords", "hotkeys")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerSpec(_Strict):
    """What a keyword, hotkey or gesture does."""
    emotion: str | None = None
    action: str | None = None
    mode: TriggerMode = TriggerMode.MOMENTARY
    hold_s: float | None = Field(None, gt=0, le=3600)
    intensity: float = Field(1.0, ge=0, le=1)

    @field_validator("action")
    @classmethod
    def _known_action(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Imported actions (the actions folder) are known too: load_mapping passes their names.
        known = (info.context or {}).get("actions") or ACTIONS
        if v is not None and v not in known:
            raise ValueError(f"unknown action {v!r} (known: {', '.join(a for a in known if a != 'none')})")
        return v

    @model_validator(mode="after")
    def _does_something(self) -> TriggerSpec:
        if self.emotion is None and self.action is None:
            raise ValueError("needs an `emotion` or an `action`")
        return self


class Tracking(_Strict):
    mirror: bool
    min_visibility: float = Field(ge=0, le=1)
    interpolation_delay_ms: float = Field(ge=0, le=500)
    max_extrapolation_ms: float = Field(ge=0, le=1000)
    lost_after_s: float = Field(gt=0, le=60)
    idle_blend_s: float = Field(gt=0, le=60)
    appear_blend_s: float = Field(0.25, gt=0, le=60)
    smoothing_s: float = Field(ge=0, le=5)
    framing: Literal["centre", "follow", "free"]
    sway: float = Field(ge=0, le=1)
    follow_range: float = Field(ge=0, le=1)
    scale_range: float = Field(ge=0, le=1)


class EmotionSettings(_Strict):
    names: tuple[str, ...]
    priority: tuple[Literal["trigger", "face", "voice"], ...]
    blend_s: float = Field(gt=0, le=30)
    trigger_blend_s: float = Field(gt=0, le=30)
    decay_s: float = Field(gt=0, le=600)
    release_s: float = Field(gt=0, le=60)
    hold_s: float = Field(gt=0, le=3600)
    hysteresis: float = Field(ge=0, le=0.5)
    min_dwell_s: float = Field(ge=0, le=30)
    face_weight: float = Field(ge=0, le=1)
    voice_weight: float = Field(ge=0, le=1)

    @field_validator("names")
    @classmethod
    def _extends_defaults(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Generators index the distribution by EMOTIONS order, so extras may only be appended.
        if tuple(v[:len(EMOTIONS)]) != EMOTIONS:
            raise ValueError(f"must start with {list(EMOTIONS)} (extra emotions go after them)")
        if len(set(v)) != len(v):
            raise ValueError("names must be unique")
        return v

    @field_validator("priority")
    @classmethod
    def _permutation(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(v) != sorted(SOURCES):
            raise ValueError(f"must list each of {list(SOURCES)} exactly once")
        return v


class FaceThresholds(_Strict):
    smile_happy: float = Field(ge=0, le=1)
    surprise_brow: float = Field(ge=0, le=1)
    surprise_mouth: float = Field(ge=0, le=1)
    furrow_angry: float = Field(ge=0, le=1)
    sad_mouth: float = Field(ge=0, le=1)
    sad_brow: float = Field(ge=0, le=1)
    sad_frown: float = Field(ge=0, le=1)
    surprise_eyes: float = Field(ge=0, le=1)
    shy_gaze_down: float = Field(ge=0, le=1)
    excited_smile: float = Field(ge=0, le=1)


class VoiceThresholds(_Strict):
    loud_dbfs: float = Field(ge=-120, le=0)
    high_semitones: float = Field(ge=0, le=24)
    quiet_dbfs: float = Field(ge=-120, le=0)
    low_semitones: float = Field(ge=-24, le=0)
    laughter: bool


class GestureSettings(_Strict):
    cooldown_s: float = Field(ge=0, le=60)
    window_s: float = Field(ge=0.5, le=5)
    wave: TriggerSpec | None = None
    nod: TriggerSpec | None = None
    head_shake: TriggerSpec | None = None
    clap: TriggerSpec | None = None
    cheer: TriggerSpec | None = None
    point: TriggerSpec | None = None

    def trigger_for(self, gesture: str) -> TriggerSpec | None:
        return getattr(self, gesture)


class ActionSpec(_Strict):
    duration_s: float = Field(gt=0, le=60)
    loop: bool = False
    blend_in_s: float = Field(ge=0, le=10)
    blend_out_s: float = Field(ge=0, le=10)


class Mapping(_Strict):
    """A validated mapping. `path` is where it came from (None: the bundled default)."""
    tracking: Tracking
    emotion: EmotionSettings
    face: FaceThresholds
    voice: VoiceThresholds
    gestures: GestureSettings
    keywords: dict[str, TriggerSpec]
    hotkeys: dict[str, TriggerSpec]
    actions: dict[str, ActionSpec]
    path: Path | None = None

    @field_validator("keywords")
    @classmethod
    def _lowercase_words(cls, v: dict[str, TriggerSpec]) -> dict[str, TriggerSpec]:
        return {k.lower(): spec for k, spec in v.items()}  # the spotter reports lowercase words

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, v: dict[str, ActionSpec]) -> dict[str, ActionSpec]:
        unknown = [k for k in v if k not in ACTIONS or k == "none"]
        if unknown:
            raise ValueError(f"unknown action {unknown[0]!r} (known: {', '.join(ACTIONS[1:])})")
        return v

    def action_spec(self, name: str) -> ActionSpec:
        return self.actions.get(name) or _FALLBACK_ACTION

    def keyword_words(self) -> list[str]:
        """The words perception's keyword spotter should listen for."""
        return list(self.keywords)

    def triggers(self) -> Any:
        """(key path, spec) of every trigger, for cross-checks and docs."""
        for table in ("keywords", "hotkeys"):
            for k, spec in getattr(self, table).items():
                yield f"{table}.{k}", spec
        for g in GESTURES:
            spec = self.gestures.trigger_for(g)
            if spec is not None:
                yield f"gestures.{g}", spec


_FALLBACK_ACTION = ActionSpec(duration_s=1.5, loop=False, blend_in_s=0.2, blend_out_s=0.3)


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{label}: mapping file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, expected a .toml mapping file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{label}: invalid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label}: cannot read: {e}") from None


def _merge(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in user.items():
        if (key not in _REPLACED_SECTIONS and isinstance(value, dict)
                and isinstance(out.get(key), dict)):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: Any) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return loc, msg


def _cross_check(m: Mapping, label: str) -> None:
    for key, spec in m.triggers():
        if spec.emotion is not None and spec.emotion not in m.emotion.names:
            raise ConfigError(f"{label}: {key}.emotion: unknown emotion {spec.emotion!r} "
                              f"(known: {', '.join(m.emotion.names)})")


def load_mapping(path: str | Path | None = None, actions: Sequence[str] | None = None) -> Mapping:
    """Load and validate a mapping file merged over the bundled default (None: the default).
    `actions`: action names triggers may use besides the built-ins (None: the user's actions
    folder). Raises ConfigError naming the file and the key."""
    if actions is None:
        from .action_files import user_action_names
        actions = user_action_names()
    actions = tuple(ACTIONS) + tuple(n for n in actions if n not in ACTIONS)   # built-ins always
    defaults = _read_toml(DEFAULT_MAPPING_PATH, str(DEFAULT_MAPPING_PATH))
    if path is None:
        data, label, src = defaults, str(DEFAULT_MAPPING_PATH), None
    else:
        src = Path(path)
        label = str(path)
        user = _read_toml(src, label)
        if "path" in user:
            raise ConfigError(f"{label}: path: unknown key")
        data = _merge(defaults, user)
    try:
        m = Mapping.model_validate({**data, "path": src}, context={"actions": tuple(actions)})
    except ValidationError as e:
        loc, msg = _describe(e.errors()[0])
        raise ConfigError(f"{label}: {loc}: {msg}") from None
    _cross_check(m, label)
    return m
