"""auto: the default generator. Routes every character to the generator that owns its pack kind
(rig2d manifests -> rig2d, imported mesh packs -> mesh), so `--character mia` works without naming a
generator and sessions switch live between nova and an imported character. One render call still
batches all sessions: rows are grouped per sub-generator (each batches its group in one pass)."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from liveavatar.errors import NotFoundError, UserError
from liveavatar.generation import characters as catalog
from liveavatar.types import Conditioning

#: pack kind -> generator that renders it
KINDS = ("rig2d", "mesh")


class AutoGenerator:
    """rig2d + mesh behind one Generator (see module doc)."""

    name = "auto"

    def __init__(self, device: str = "cpu", size: int = 512, default_character: str = "nova"):
        from liveavatar.generation.mesh import MeshGenerator
        from liveavatar.generation.rig2d import Rig2DGenerator

        self._subs: dict[str, Any] = {"rig2d": Rig2DGenerator(device=device, size=size),
                                      "mesh": MeshGenerator(device=device, size=size)}
        self.device = self._subs["rig2d"].device
        self.size = self._subs["rig2d"].size
        self.default_character = default_character
        self._owner: dict[str, str] = {}      # character -> kind, filled by prepare_character
        self._lock = threading.Lock()

    def load(self) -> None:
        names = self.characters()
        self.prepare_character(self.default_character if self.default_character in names else names[0])

    def warmup(self) -> None:
        if not self._owner:
            self.load()
        for kind in {self._owner[n] for n in self._owner}:
            self._subs[kind].warmup()

    def characters(self) -> list[str]:
        return sorted(n for n, e in catalog.catalog().items() if e.kind in KINDS)

    def _kind(self, name: str) -> str:
        kind = self._owner.get(name)
        if kind is not None:
            return kind
        entry = catalog.catalog().get(name)
        if entry is None or entry.kind not in KINDS:
            shown = " ".join(repr(name).split())[:80]
            raise NotFoundError(f"unknown character {shown}; available: {', '.join(self.characters()) or 'none'}")
        return entry.kind

    def prepare_character(self, name: str) -> None:
        kind = self._kind(name)
        self._subs[kind].prepare_character(name)
        with self._lock:
            self._owner = {**self._owner, name: kind}

    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        n = len(conds)
        if n != len(characters):
            raise UserError(f"auto.render: {n} conditionings but {len(characters)} character names")
        if n == 0:
            return np.zeros((0, self.size, self.size, 4), np.uint8)
        kinds = [self._kind(c) for c in characters]
        if all(k == kinds[0] for k in kinds):
            return self._subs[kinds[0]].render(conds, characters)
        out = np.empty((n, self.size, self.size, 4), np.uint8)
        for kind in dict.fromkeys(kinds):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            out[idx] = self._subs[kind].render([conds[i] for i in idx], [characters[i] for i in idx])
        return out

    def reset(self) -> None:
        for g in self._subs.values():
            g.reset()

    def info(self) -> dict:
        return {"generator": self.name, "device": self.device, "size": self.size,
                "routes": dict(sorted(self._owner.items())),
                "generators": {k: g.info() for k, g in self._subs.items()}}

    def sub(self, kind: str) -> Any:
        """The generator that renders packs of `kind` ("rig2d" or "mesh")."""
        return self._subs[kind]
