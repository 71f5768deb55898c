"""Export a trained network to ONNX (opset 17, dynamic batch) and record it in the manifest."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from liveavatar.generation.neural import layout, manifest
from liveavatar.generation.neural.model import STATE_CHANNELS, ExportWrapper, NeuralAvatarNet

OPSET = 17


def io_specs(net: NeuralAvatarNet) -> tuple[list[manifest.TensorSpec], list[manifest.TensorSpec]]:
    s, g = net.cfg.size, net.cfg.guide
    T = manifest.TensorSpec
    inputs = [T(name="cond", shape=["batch", layout.COND_DIM], dtype="float32",
                description="packed Conditioning, one row per session (see cond_layout)"),
              T(name="state", shape=["batch", STATE_CHANNELS, g, g], dtype="float32",
                description="previous frame's next_state; zeros after a reset")]
    outputs = [T(name="rgba", shape=["batch", s, s, 4], dtype="uint8",
                 description="straight-alpha RGBA, transparent background"),
               T(name="next_state", shape=["batch", STATE_CHANNELS, g, g], dtype="float32",
                 description="premultiplied RGBA at guide resolution, fed back as state")]
    return inputs, outputs


def export_onnx(net: NeuralAvatarNet, path: Path) -> None:
    net = net.eval().cpu()
    wrapper = ExportWrapper(net)
    g = net.cfg.guide
    cond = torch.zeros(2, layout.COND_DIM)
    cond[:, layout.OFFSETS["root"].start + 2] = 1.0
    state = torch.zeros(2, STATE_CHANNELS, g, g)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the legacy exporter's deprecation notice
        torch.onnx.export(wrapper, (cond, state), str(path), opset_version=OPSET,
                          input_names=["cond", "state"], output_names=["rgba", "next_state"],
                          dynamic_axes={n: {0: "batch"} for n in ("cond", "state", "rgba", "next_state")},
                          dynamo=False, do_constant_folding=True)


def export(net: NeuralAvatarNet, folder: Path, character: str, training: manifest.Training,
           description: str = "", licence: str = "Apache-2.0") -> manifest.ModelEntry:
    """Write <folder>/<character>.onnx and its manifest entry; return the entry."""
    onnx_path = folder / f"{character}.onnx"
    export_onnx(net, onnx_path)
    inputs, outputs = io_specs(net)
    entry = manifest.ModelEntry(
        character=character, file=onnx_path.name, sha256=manifest.sha256_of(onnx_path),
        size=onnx_path.stat().st_size, opset=OPSET, inputs=inputs, outputs=outputs,
        cond_layout=layout.describe(), net_config=net.cfg.to_dict(), training=training,
        licence=licence, description=description or
        f"LiveAvatar neural generator for {character!r}: FiLM U-Net decoder over a skeleton guide")
    manifest.write(folder, entry)
    return entry
