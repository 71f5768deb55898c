"""NeuralGenerator: the `neural` plug-in. Renders characters learnt by `liveavatar train`."""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liveavatar.errors import NotFoundError, UserError
from liveavatar.generation.neural import manifest
from liveavatar.generation.neural.runtime import OUTPUT_RING, OnnxCharacterModel
from liveavatar.paths import models_dir
from liveavatar.types import Conditioning

log = logging.getLogger(__name__)
DEFAULT_CHARACTER = "nova"


def default_model_dir() -> Path:
    return models_dir() / "neural"


class NeuralGenerator:
    """Batched ONNX renderer. Batch row i is session slot i: its previous frame is kept per slot
    (the network's temporal input) until `reset()` or until that slot changes character."""

    name = "neural"

    def __init__(self, device: str = "cpu", size: int = 256, model_dir: Path | str | None = None,
                 threads: int = 0) -> None:
        if device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {device!r}; use cpu or cuda")
        self.requested_device = device
        self.device = device
        self.size = int(size)
        if self.size < 16:
            raise UserError(f"size {size} is too small (at least 16)")
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.threads = threads
        self._models: dict[str, OnnxCharacterModel] = {}
        self._lock = threading.Lock()          # guards _models against a concurrent prepare
        self._slot_character: list[str | None] = []
        self._resized: list[np.ndarray] = []
        self._mixed: list[np.ndarray] = []
        self._ring = 0

    # -- protocol ---------------------------------------------------------------------------
    def load(self) -> None:
        chars = self.characters()
        if not chars:
            raise NotFoundError(f"no neural models in {self.model_dir / manifest.MANIFEST}; "
                                f"train one with `liveavatar train`")
        self.prepare_character(DEFAULT_CHARACTER if DEFAULT_CHARACTER in chars else chars[0])

    def warmup(self) -> None:
        if not self._models:
            self.load()
        name = next(iter(self._models))
        cond = Conditioning.neutral()
        for n in (1, 8, 1):
            for _ in range(3):
                self.render([cond] * n, [name] * n)
        self.reset()

    def characters(self) -> list[str]:
        return sorted(m.character for m in manifest.read(self.model_dir).models)

    def prepare_character(self, name: str) -> None:
        if name in self._models:
            return
        entry = manifest.entry_for(self.model_dir, name)
        model = OnnxCharacterModel(self.model_dir, entry, self.requested_device, self.threads)
        with self._lock:   # publish only a fully built model; renders in flight never see half
            self._models = {**self._models, name: model}
        really = "cuda" if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(model.providers) else "cpu"
        if self.requested_device == "cuda" and really == "cpu":
            log.warning("neural generator: CUDA was asked for but onnxruntime runs %s on the CPU "
                        "(providers %s)", name, model.providers)
        self.device = really

    def render(self, conds: Sequence[Conditioning], characters: Sequence[str]) -> np.ndarray:
        n = len(conds)
        if n != len(characters):
            raise ValueError("render: one character per conditioning")
        if n == 0:
            return np.zeros((0, self.size, self.size, 4), np.uint8)
        self._track_slots(characters)
        models = self._models
        first = characters[0]
        if all(c == first for c in characters):
            return self._fit(self._model(models, first).run(conds, np.arange(n)))
        # several characters in one batch: one run call per model, gathered in slot order
        self._ring = (self._ring + 1) % OUTPUT_RING
        out = self._buffer(self._mixed, n)
        names = np.asarray(characters, dtype=object)
        for name in dict.fromkeys(characters):
            slots = np.flatnonzero(names == name)
            frames = self._model(models, name).run([conds[i] for i in slots], slots)
            if frames.shape[1] == self.size:
                out[slots] = frames
            else:
                for k, slot in enumerate(slots):
                    self._resize(frames[k], out[slot])
        return out

    def reset(self) -> None:
        for m in self._models.values():
            m.state.fill(0.0)
        self._slot_character = []

    def info(self) -> dict:
        models = self._models
        providers = sorted({p for m in models.values() for p in m.providers})
        return {"generator": self.name, "device": self.device, "requested_device": self.requested_device,
                "providers": providers, "size": self.size,
                "native_size": next((m.size for m in models.values()), None),
                "models": {n: {"file": str(m.path), "sha256": m.entry.sha256, "providers": m.providers}
                           for n, m in models.items()},
                "characters": self.characters()}

    # -- helpers ----------------------------------------------------------------------------
    def _model(self, models: dict, name: str) -> OnnxCharacterModel:
        m = models.get(name)
        if m is None:
            self.prepare_character(name)   # raises NotFoundError for an unknown name
            m = self._models[name]
        return m

    def _track_slots(self, characters: Sequence[str]) -> None:
        """A slot whose character changed starts from an empty previous frame."""
        sc = self._slot_character
        if len(sc) < len(characters):
            sc.extend([None] * (len(characters) - len(sc)))
        for i, name in enumerate(characters):
            if sc[i] != name:
                sc[i] = name
                m = self._models.get(name)
                if m is not None:   # a model loaded later starts with empty state anyway
                    m.ensure_slots(i + 1)
                    m.reset_slots(i)

    def _buffer(self, pool: list, n: int) -> np.ndarray:
        """A preallocated (n, size, size, 4) view from a ring of buffers grown by doubling."""
        if not pool or pool[0].shape[0] < n:
            cap = max(8, n, pool[0].shape[0] * 2 if pool else 0)
            pool[:] = [np.zeros((cap, self.size, self.size, 4), np.uint8) for _ in range(OUTPUT_RING)]
        return pool[self._ring][:n]

    def _resize(self, frame: np.ndarray, dst: np.ndarray) -> None:
        import cv2
        interp = cv2.INTER_LINEAR if self.size > frame.shape[0] else cv2.INTER_AREA
        cv2.resize(frame, (self.size, self.size), dst=dst, interpolation=interp)

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        """Frames at the model's native size, resized to `size` when that differs."""
        if frames.shape[1] == self.size:
            return frames
        self._ring = (self._ring + 1) % OUTPUT_RING
        out = self._buffer(self._resized, frames.shape[0])
        for i in range(frames.shape[0]):   # one resize per session
            self._resize(frames[i], out[i])
        return out
