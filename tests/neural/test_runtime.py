"""Export -> manifest -> NeuralGenerator: loads, renders batches, keeps per-session state."""
from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from liveavatar.generation import registry
from liveavatar.generation.neural import NeuralGenerator, layout, manifest, sampling
from liveavatar.generation.neural.model import ExportWrapper
from liveavatar.generation.protocol import Generator
from liveavatar.types import Conditioning


def test_manifest_describes_the_file(exported):
    man = json.loads((exported / "manifest.json").read_text())
    entry = next(m for m in man["models"] if m["character"] == "nova")
    path = exported / entry["file"]
    assert entry["sha256"] == manifest.sha256_of(path) and entry["size"] == path.stat().st_size
    assert entry["opset"] >= 17 and entry["licence"]
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in list(model.graph.input) + list(model.graph.output)}
    assert dims == {s["name"]: s["shape"] for s in entry["inputs"] + entry["outputs"]}
    assert dims["cond"] == ["batch", layout.COND_DIM] and dims["rgba"] == ["batch", 256, 256, 4]
    assert sum(f["width"] for f in entry["cond_layout"]) == layout.COND_DIM


def test_generator_renders_what_the_network_computes(exported, random_net):
    gen = NeuralGenerator("cpu", 256, model_dir=exported)
    assert isinstance(gen, Generator)
    assert gen.characters() == ["bolt", "nova"]
    gen.load()
    gen.warmup()
    conds, _ = sampling.sequences(3, seed=21, action_prob=1.0)
    out = gen.render(conds, ["nova"] * 3).astype(int)
    cond = torch.from_numpy(layout.pack(conds, np.zeros((3, layout.COND_DIM), np.float32)).copy())
    with torch.no_grad():
        ref = ExportWrapper(random_net)(cond, torch.zeros(3, 4, 64, 64))[0].numpy().astype(int)
    assert out.shape == (3, 256, 256, 4)
    assert np.abs(out[..., 3] - ref[..., 3]).max() <= 1
    info = gen.info()
    assert info["providers"] == ["CPUExecutionProvider"] and info["device"] == "cpu"
    assert info["models"]["nova"]["sha256"] == manifest.read(exported).find("nova").sha256


def test_previous_frame_is_kept_per_session_until_reset(exported):
    gen = NeuralGenerator("cpu", 256, model_dir=exported)
    gen.load()
    a, b = sampling.sequences(2, seed=5)[0]
    first = gen.render([a, b], ["nova", "nova"]).copy()
    second = gen.render([a, b], ["nova", "nova"]).copy()
    assert not np.array_equal(first, second)          # the state (previous frame) is an input
    gen.reset()
    np.testing.assert_array_equal(gen.render([a, b], ["nova", "nova"]), first)
    # a slot that switches character starts from an empty previous frame
    gen.reset()
    gen.render([a, b], ["nova", "nova"])
    switched = gen.render([a, b], ["nova", "bolt"])
    np.testing.assert_array_equal(switched[1], first[1])   # bolt is the same net: fresh state


def test_mixed_characters_and_batches_match_single_renders(exported):
    conds, _ = sampling.sequences(3, seed=9)
    gen = NeuralGenerator("cpu", 256, model_dir=exported)
    mixed = gen.render(conds, ["nova", "bolt", "nova"]).astype(int)
    for i, name in enumerate(["nova", "bolt", "nova"]):
        alone = NeuralGenerator("cpu", 256, model_dir=exported)
        single = alone.render([conds[i]], [name]).astype(int)
        assert np.abs(mixed[i] - single[0]).max() <= 1


def test_other_output_sizes_are_resized(exported):
    c = Conditioning.neutral()
    native = NeuralGenerator("cpu", 256, model_dir=exported).render([c], ["nova"])
    big = NeuralGenerator("cpu", 512, model_dir=exported).render([c], ["nova"])
    assert big.shape == (1, 512, 512, 4)
    down = big[0].reshape(256, 2, 256, 2, 4).mean(axis=(1, 3))
    native = native[0].astype(float)
    # the upscaled frame is the same picture: far closer to it than the picture moved by 3 px
    assert np.abs(down - native).mean() < 0.5 * np.abs(np.roll(native, 3, axis=1) - native).mean()


def test_bad_inputs_are_clamped_not_rendered_as_garbage(exported):
    gen = NeuralGenerator("cpu", 256, model_dir=exported)
    bad = Conditioning.neutral()
    bad.bone_angles[:] = np.nan
    bad.root[:] = np.inf
    bad.face[:] = 1e9
    out = gen.render([bad], ["nova"])
    clean = Conditioning.neutral()
    clean.bone_angles[:] = 0.0
    clean.root[:] = [0.0, 0.0, 1.0]
    clean.face[:] = 1.0
    gen.reset()
    np.testing.assert_array_equal(out, gen.render([clean], ["nova"]))


def test_registry_creates_it_from_the_models_folder(exported, monkeypatch):
    monkeypatch.setenv("LIVEAVATAR_MODELS", str(exported.parent))
    gen = registry.create("neural", "cpu", size=256)
    assert gen.name == "neural" and "nova" in gen.characters()
    assert gen.render([Conditioning.neutral()], ["nova"]).shape == (1, 256, 256, 4)


def test_info_reports_the_provider_that_really_runs(exported):
    from liveavatar.generation.neural.runtime import gpu_present
    gen = NeuralGenerator("cuda", 256, model_dir=exported)
    gen.load()
    info = gen.info()
    assert info["requested_device"] == "cuda"
    if gpu_present():
        assert "CUDAExecutionProvider" in info["providers"] and info["device"] == "cuda"
    else:   # asked for CUDA on a machine without a GPU: says so instead of pretending
        assert info["device"] == "cpu" and info["providers"] == ["CPUExecutionProvider"]
