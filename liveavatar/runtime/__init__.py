"""Runtime helpers shared by all stages: latest-wins slots, workers, stage timing."""
from liveavatar.runtime.slots import LatestSlot
from liveavatar.runtime.timing import StageTimer

__all__ = ["LatestSlot", "StageTimer"]
