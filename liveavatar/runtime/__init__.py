"""Runtime helpers shared by all stages: latest-wins slots, drop-oldest buffers, worker threads,
thread-to-loop wake-ups, stage timing, and tracking's pace under load."""
from liveavatar.runtime.buffers import DropOldest
from liveavatar.runtime.pacing import TrackingGovernor
from liveavatar.runtime.slots import LatestSlot
from liveavatar.runtime.timing import StageTimer
from liveavatar.runtime.wakeup import LoopWakeup
from liveavatar.runtime.worker import Worker, lower_thread_priority, name_os_thread

__all__ = ["DropOldest", "LatestSlot", "LoopWakeup", "StageTimer", "TrackingGovernor", "Worker",
           "lower_thread_priority", "name_os_thread"]
