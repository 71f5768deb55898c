import numpy as np
import pytest

from liveavatar.generation.rig2d import Rig2DGenerator

BACKGROUND = np.array([128, 128, 128], np.float32)


@pytest.fixture(scope="session")
def rig():
    g = Rig2DGenerator(device="cpu", size=512)
    g.load()
    g.warmup()
    g.prepare_character("bolt")
    return g


@pytest.fixture(scope="session")
def rig_small():
    """A 256 px generator for tests that need many frames."""
    g = Rig2DGenerator(device="cpu", size=256)
    g.load()
    return g


def over_background(rgba: np.ndarray, colour=BACKGROUND) -> np.ndarray:
    """RGBA frame(s) composited over a plain colour -> RGB uint8 (what a viewer sees)."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + colour * (1.0 - a) + 0.5).astype(np.uint8)
