"""Runs one character's ONNX model with onnxruntime: provider choice, validation, I/O buffers.

Buffers are allocated once per model at the largest batch seen (grown by doubling, never per
frame), and every batch size gets its own I/O binding made once, so a render is: pack rows into
the bound input, one `run_with_iobinding`, read the bound output. The runtime imports no torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.errors import ConfigError
from liveavatar.generation.neural import layout, manifest
from liveavatar.paths import safe_join

OUTPUT_RING = 4   # a returned frame stays valid for this many later renders


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible; CUDA providers are only asked for then (onnxruntime-gpu
    lists them even without a GPU, logs an error and silently falls back to CPU)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or _torch_cuda()


def _torch_cuda() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def providers_for(device: str) -> list:
    import onnxruntime as ort
    available = ort.get_available_providers()
    chosen: list = []
    if device == "cuda" and gpu_present():
        if "TensorrtExecutionProvider" in available and os.environ.get("LIVEAVATAR_TENSORRT", "1") != "0":
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liveavatar" / "trt"
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append(("TensorrtExecutionProvider", {
                "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache)}))
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxCharacterModel:
    """One character's network, ready to render batches. `state` rows are per session slot."""

    def __init__(self, folder: Path, entry: manifest.ModelEntry, device: str, threads: int = 0) -> None:
        import onnxruntime as ort
        self.entry = entry
        # The manifest is data: its file name must not reach outside the models folder.
        self.path = path = safe_join(folder, entry.file, what=f"{folder / manifest.MANIFEST}: file")
        if not path.is_file():
            raise ConfigError(f"{path}: model file missing (listed in {folder / manifest.MANIFEST})")
        digest = manifest.sha256_of(path)
        if digest != entry.sha256:
            raise ConfigError(f"{path}: sha256 {digest[:12]}... does not match the manifest "
                              f"({entry.sha256[:12]}...): corrupt or replaced file")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers_for(device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ConfigError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.providers: list[str] = self.session.get_providers()
        self._check_shapes()
        st = entry.inputs[1].shape
        out = entry.outputs[0].shape
        self.state_shape = (int(st[1]), int(st[2]), int(st[3]))
        self.size = int(out[1])
        self.capacity = 0
        self._bindings: dict[tuple[int, int], object] = {}
        self._ring = 0
        self._grow(8)

    def _check_shapes(self) -> None:
        got_in = {i.name: i for i in self.session.get_inputs()}
        got_out = {o.name: o for o in self.session.get_outputs()}
        want = [("input", s, got_in) for s in self.entry.inputs] + \
               [("output", s, got_out) for s in self.entry.outputs]
        for kind, spec, got in want:
            g = got.get(spec.name)
            if g is None:
                raise ConfigError(f"{self.path}: has no {kind} named {spec.name!r} "
                                  f"(has {', '.join(got) or 'none'})")
            fixed_want = [d for d in spec.shape[1:]]
            fixed_got = list(g.shape[1:])
            if len(g.shape) != len(spec.shape) or fixed_got != fixed_want:
                raise ConfigError(f"{self.path}: {kind} {spec.name!r} has shape {list(g.shape)}, "
                                  f"expected {spec.shape}")
        if self.entry.inputs[0].shape[1] != layout.COND_DIM:
            raise ConfigError(f"{self.path}: input 'cond' has width {self.entry.inputs[0].shape[1]}, "
                              f"this LiveAvatar packs {layout.COND_DIM}")

    def _grow(self, capacity: int) -> None:
        """(Re)allocate every buffer for `capacity` sessions; bindings are rebuilt lazily."""
        self.capacity = capacity
        c, h, w = self.state_shape
        self.cond = np.zeros((capacity, layout.COND_DIM), np.float32)
        self.state = np.zeros((capacity, c, h, w), np.float32)          # per session slot
        self.state_in = np.zeros((capacity, c, h, w), np.float32)       # gathered for one call
        self.state_out = np.zeros((capacity, c, h, w), np.float32)
        self.rgba = [np.zeros((capacity, self.size, self.size, 4), np.uint8) for _ in range(OUTPUT_RING)]
        self._bindings.clear()

    def _binding(self, n: int, ring: int) -> Any:
        key = (n, ring)
        b = self._bindings.get(key)
        if b is None:
            import onnxruntime as ort
            b = self.session.io_binding()
            inputs: tuple[tuple[str, np.ndarray], ...] = (("cond", self.cond[:n]), ("state", self.state_in[:n]))
            for name, arr in inputs:
                b.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            outputs: tuple[tuple[str, np.ndarray], ...] = (("rgba", self.rgba[ring][:n]),
                                                           ("next_state", self.state_out[:n]))
            for name, arr in outputs:
                b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
            self._bindings[key] = b
        return b

    def ensure_slots(self, n_slots: int) -> None:
        if n_slots > self.capacity:
            old = self.state
            cap = self.capacity
            while cap < n_slots:
                cap *= 2
            self._grow(cap)
            self.state[:old.shape[0]] = old

    def reset_slots(self, slots: Any) -> None:
        self.state[slots] = 0.0

    def run(self, conds: Any, slots: np.ndarray) -> np.ndarray:
        """Render `conds` for session `slots` (their state rows) in one call; returns a view into
        the output ring, (n, size, size, 4) uint8."""
        n = len(conds)
        self.ensure_slots(int(slots.max()) + 1)
        layout.pack(conds, self.cond)
        np.take(self.state, slots, axis=0, out=self.state_in[:n])
        ring = self._ring = (self._ring + 1) % OUTPUT_RING
        self.session.run_with_iobinding(self._binding(n, ring))
        self.state[slots] = self.state_out[:n]
        return self.rgba[ring][:n]
