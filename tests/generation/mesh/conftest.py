from __future__ import annotations

import numpy as np
import pytest

from liveavatar.generation.mesh import MeshGenerator
from tests.generation.mesh.drawings import make_pack


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Imported characters live in a temp user folder: the three children's drawings."""
    root = tmp_path_factory.mktemp("data")
    for i in (1, 2, 3):
        make_pack(i, root / "characters")
    return root


@pytest.fixture(autouse=True)
def _user_folder(data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEAVATAR_DATA_DIR", str(data_dir))


@pytest.fixture(scope="session")
def mesh256(data_dir) -> MeshGenerator:
    import os
    old = os.environ.get("LIVEAVATAR_DATA_DIR")
    os.environ["LIVEAVATAR_DATA_DIR"] = str(data_dir)
    try:
        g = MeshGenerator(device="cpu", size=256)
        for name in ("drawing1", "drawing2", "drawing3", "astro"):
            g.prepare_character(name)
    finally:
        if old is None:
            os.environ.pop("LIVEAVATAR_DATA_DIR", None)
        else:
            os.environ["LIVEAVATAR_DATA_DIR"] = old
    return g


def signed_areas(v: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = v[..., tris[:, 0], :], v[..., tris[:, 1], :], v[..., tris[:, 2], :]
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def flipped(gen: MeshGenerator, conds: list, name: str) -> np.ndarray:
    """Flipped triangles per conditioning (a spin's mirrored half counts as not flipped)."""
    rest, tris = gen.mesh(name)
    s0 = np.sign(signed_areas(rest, tris))
    v, _, mirror = gen.deform(conds, name)
    s = signed_areas(v, tris) * mirror[:, None]
    return ((s * s0[None]) <= 0).sum(1)


def area(rgba: np.ndarray) -> np.ndarray:
    return (rgba[..., 3] > 127).sum((-1, -2)).astype(np.float64)
