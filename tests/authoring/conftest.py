from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DRAWINGS = REPO / ".." / "shared" / "media" / "drawings"


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Imported characters go to a fresh user folder (LIVEAVATAR_DATA_DIR) per test."""
    monkeypatch.setenv("LIVEAVATAR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "characters"


def write_png(path: Path, rgba: np.ndarray) -> Path:
    from PIL import Image
    Image.fromarray(rgba.astype(np.uint8), "RGBA" if rgba.shape[2] == 4 else "RGB").save(path)
    return path


def drawing_rgba(name: str = "char1") -> np.ndarray:
    from PIL import Image
    with Image.open(DRAWINGS / f"{name}_texture.png") as im:
        return np.asarray(im.convert("RGBA"))


def drawing_mask(name: str = "char1") -> np.ndarray:
    from PIL import Image
    with Image.open(DRAWINGS / f"{name}_mask.png") as im:
        return np.asarray(im.convert("L")) > 127
