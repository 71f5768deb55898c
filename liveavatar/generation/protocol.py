"""The one plug-in point for video generators.

A generator turns a batch of Conditionings (one per live session) into RGBA frames in one call.
Third-party wheels register a factory under the `liveavatar.generators` entry-point group; the
factory is called as `factory(device=..., size=...)` and must return an object satisfying
`Generator`. The live service drives a `LiveGenerator` (render_sessions, forget_session, close
besides); `live_generator` gives a generator that lacks those the in-process defaults.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from liveavatar.types import Conditioning


@runtime_checkable
class Generator(Protocol):
    name: str
    device: str          # "cpu" or "cuda" (what really runs, not what was asked)
    size: int            # output frames are size x size

    def load(self) -> None:
        """Load weights / assets. Raises UserError with the file name on bad files."""

    def warmup(self) -> None:
        """Run a few renders so the first real frame is not slow."""

    def prepare_character(self, name: str) -> None:
        """Make `name` renderable (load textures etc.). Raises NotFoundError for an unknown name.
        Must not disturb renders of other characters in flight (live switching drops no frame)."""

    def characters(self) -> list[str]:
        """Names of characters this generator can render."""

    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        """Render one frame per conditioning, batched in one call. Returns (B, size, size, 4)
        uint8 RGBA with straight alpha and a transparent background. Must clamp NaN/out-of-range
        inputs rather than render garbage."""

    def reset(self) -> None:
        """Forget temporal state (e.g. previous frames) of all sessions."""

    def info(self) -> dict:
        """What really runs: device, providers, model files. Shown by doctor and /health."""


class LiveGenerator(Generator, Protocol):
    """What the live service drives: a Generator plus the per-session calls. A generator may
    implement these itself (the Ray Serve workers do); `live_generator` gives the others the
    in-process defaults, so a plain Generator (and every plug-in) still serves."""

    def render_sessions(self, sessions: Sequence[str], conds: Sequence[Conditioning],
                        characters: Sequence[str]) -> np.ndarray:
        """The live service's render: `render`, told which session each frame is for (a
        generator on remote workers keeps one request in flight per session)."""

    def forget_session(self, sid: str) -> None:
        """Session `sid` ended: drop what is kept for it."""

    def close(self) -> None:
        """The service stops: release workers and devices."""


_LIVE_METHODS = ("render_sessions", "forget_session", "close")


class _InProcessSessions:
    """A generator without the live-session methods, given the in-process defaults: every
    session renders in the one batched call and nothing is kept per session. Anything else is
    the wrapped generator's own."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator
        # the one or two of the three it does have stay its own (looked up once, here)
        self._own_render_sessions = getattr(generator, "render_sessions", None)
        self._own_forget = getattr(generator, "forget_session", None)
        self._own_close = getattr(generator, "close", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generator, name)

    def render_sessions(self, sessions: Sequence[str], conds: Sequence[Conditioning],
                        characters: Sequence[str]) -> np.ndarray:
        if self._own_render_sessions is not None:
            own: np.ndarray = self._own_render_sessions(sessions, conds, characters)
            return own
        frames: np.ndarray = self._generator.render(conds, characters)
        return frames

    def forget_session(self, sid: str) -> None:
        if self._own_forget is not None:
            self._own_forget(sid)

    def close(self) -> None:
        if self._own_close is not None:
            self._own_close()


def live_generator(generator: Any) -> LiveGenerator:
    """`generator` with the live-session methods: its own, or the in-process defaults."""
    if all(callable(getattr(generator, m, None)) for m in _LIVE_METHODS):
        return generator
    return _InProcessSessions(generator)   # the rest of Generator through __getattr__
