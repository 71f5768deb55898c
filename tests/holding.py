"""One helper shared by the conditioning and generation tests: what the conditioner settles on
when perception keeps reporting the same result."""
from __future__ import annotations

from liveavatar.clock import VirtualClock
from liveavatar.conditioning import Conditioner
from liveavatar.types import Conditioning, Cues


def hold(cues: Cues, seconds: float = 2.0, mirror: bool | None = None) -> tuple[Conditioner, Conditioning]:
    """(conditioner, its last conditioning) after seeing `cues` for `seconds` at 30 fps."""
    clock = VirtualClock(int(1e9))
    c = Conditioner(clock=clock)
    if mirror is not None:
        c.set_mirror(mirror)
    out = None
    for i in range(int(seconds * 30)):
        cues.t_capture_ns = int(1e9 + i * 1e9 / 30)
        clock.sleep_until(cues.t_capture_ns)
        c.push_cues(cues)
        out = c.tick(cues.t_capture_ns)
    return c, out
