"""Stand-ins for perception in unit tests of the server's own logic (signalling, API, auth,
sessions). The generator and conditioner are the real ones."""
from __future__ import annotations

import threading

import numpy as np

from liveavatar.runtime import LatestSlot
from liveavatar.types import FACE_FEATURES, Cues, Part, VoiceFeatures


class FakePerception:
    """Counts what it is fed; reports nobody in frame."""

    def __init__(self) -> None:
        self.audio_chunks = 0
        self.calibrations = 0
        self.closed = False

    def process_audio(self, chunk) -> None:
        self.audio_chunks += 1

    def start_calibration(self, seconds: float) -> None:
        self.calibrations += 1

    def stats(self) -> dict:
        return {"device": "cpu", "fake": True}

    def close(self) -> None:
        self.closed = True


class FakeWorker(threading.Thread):
    """Turns each CapturedFrame into empty Cues (so capture times flow through)."""

    def __init__(self, perception, frames_in: LatestSlot, cues_out: LatestSlot, pace=None) -> None:
        super().__init__(daemon=True)
        self.frames_in, self.cues_out = frames_in, cues_out
        self.processed = 0
        self.dropped = 0
        self._halt = False

    def run(self) -> None:
        while not self._halt:
            f = self.frames_in.take(0.1)
            if f is None:
                continue
            self.processed += 1
            self.cues_out.put(Cues(f.seq, f.t_capture_ns, Part.empty(33), Part.empty(478), Part.empty(21),
                                   Part.empty(21), np.zeros(len(FACE_FEATURES), np.float32), False,
                                   VoiceFeatures(), (), (f.image.shape[1], f.image.shape[0])))

    def stop(self) -> None:
        self._halt = True
        self.join(2)

    @property
    def alive(self) -> bool:
        return self.is_alive()


def fake_perception_stages(cfg):
    from liveavatar.server.stages import real_stages
    st = real_stages(cfg)
    st.perception = FakePerception
    st.worker = FakeWorker
    return st
