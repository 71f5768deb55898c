"""A real service whose generator is the mesh generator (it renders imported characters), with a
fresh user data folder for imports."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def mesh_generator(size: int) -> Any:
    from liveavatar.generation.mesh import MeshGenerator
    gen = MeshGenerator(device="cpu", size=size)
    gen.load()
    gen.warmup()
    return gen


@contextmanager
def user_data(folder: Path) -> Iterator[Path]:
    old = os.environ.get("LIVEAVATAR_DATA_DIR")
    os.environ["LIVEAVATAR_DATA_DIR"] = str(folder)
    try:
        yield folder / "characters"
    finally:
        if old is None:
            os.environ.pop("LIVEAVATAR_DATA_DIR", None)
        else:
            os.environ["LIVEAVATAR_DATA_DIR"] = old
