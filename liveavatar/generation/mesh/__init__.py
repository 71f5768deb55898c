"""mesh: imported characters (one picture or PSD layers) deformed as a skinned triangle mesh.

`pack` (the pack format) imports no torch; the generator is loaded on first use so listing
characters stays cheap."""
from __future__ import annotations

from typing import Any

__all__ = ["MeshGenerator"]


def __getattr__(name: str) -> Any:
    if name == "MeshGenerator":
        from liveavatar.generation.mesh.generator import MeshGenerator
        return MeshGenerator
    raise AttributeError(name)
