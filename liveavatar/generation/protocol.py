"""The one plug-in point for video generators.

A generator turns a batch of Conditionings (one per live session) into RGBA frames in one call.
Third-party wheels register a factory under the `liveavatar.generators` entry-point group; the
factory is called as `factory(device=..., size=...)` and must return an object satisfying
`Generator`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

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
