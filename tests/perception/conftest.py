"""Shared, expensive fixtures: MediaPipe graphs take a moment to build, so stills share one."""
import numpy as np
import pytest

from liveavatar.perception import Perception
from liveavatar.types import CapturedFrame
from tests.media import load_rgb


@pytest.fixture(scope="session")
def still_perception():
    p = Perception(static=True, enable_voice=False)
    yield p
    p.close()


@pytest.fixture(scope="session")
def still_cues(still_perception):
    """Cues of each real still, computed once."""
    out = {}
    for name in ("messi5.jpg", "basketball1.png", "basketball2.png", "astronaut.png", "grace_hopper.jpg"):
        out[name] = still_perception.process_video(CapturedFrame(load_rgb(name), 0, 1))
    return out


def frame(image, seq: int, t_s: float) -> CapturedFrame:
    return CapturedFrame(image, seq, int(t_s * 1e9))


def video_frames(name: str, limit: int = 0) -> list[np.ndarray]:
    import av

    from tests.media import path
    out = []
    with av.open(str(path(name))) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if limit and len(out) >= limit:
                break
    return out
