"""`liveavatar doctor`: what this machine really has, and what LiveAvatar will use."""
from __future__ import annotations

import json
import shutil
import subprocess

import typer


def _version(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0])
    if not exe:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        line = (out.stdout or out.stderr).strip().splitlines()
        return line[0] if line else exe
    except (OSError, subprocess.TimeoutExpired):
        return exe


def collect() -> dict:
    import importlib.metadata as md
    from pathlib import Path

    report: dict = {"packages": {}}
    for pkg in ("liveavatar", "torch", "mediapipe", "onnxruntime-gpu", "onnxruntime", "numpy", "aiortc",
                "av", "aiohttp", "obsws-python", "silero-vad", "pocketsphinx", "opencv-contrib-python"):
        try:
            report["packages"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import torch
    report["torch"] = {"cuda_available": torch.cuda.is_available(),
                       "device": "cuda" if torch.cuda.is_available() else "cpu",
                       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                       "threads": torch.get_num_threads()}
    import onnxruntime as ort
    report["onnxruntime"] = {"available_providers": ort.get_available_providers(),
                             "usable_providers": _usable_providers(torch.cuda.is_available())}
    import mediapipe
    mp_dir = Path(mediapipe.__file__).parent / "modules"
    needed = ["pose_landmark/pose_landmark_full.tflite", "pose_detection/pose_detection.tflite",
              "face_landmark/face_landmark_with_attention.tflite", "face_detection/face_detection_short_range.tflite",
              "hand_landmark/hand_landmark_full.tflite", "palm_detection/palm_detection_full.tflite"]
    report["mediapipe_models"] = {n: (mp_dir / n).exists() for n in needed}
    report["tools"] = {"ffmpeg": _version(["ffmpeg", "-version"]),
                       "chromium": _version(["chromium", "--version"]) or _version(["google-chrome", "--version"]),
                       "obs": _version(["obs", "--version"]),
                       "espeak-ng": _version(["espeak-ng", "--version"])}
    from liveavatar.generation import registry
    report["generators"] = sorted(registry.available())
    try:
        from liveavatar.generation.characters import list_characters
        report["characters"] = list_characters()
    except Exception as e:  # a broken pack must not hide the rest of the report
        report["characters"] = f"error: {e}"
    return report


def _usable_providers(gpu: bool) -> list[str]:
    """Providers a session really gets: build a one-node model and ask it (ORT lists CUDA even
    where it cannot load, then silently falls back to CPU)."""
    import onnxruntime as ort
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return ["unknown (onnx not installed)"]
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    want = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    want = [p for p in want if p in ort.get_available_providers()]
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=want)
    return sess.get_providers()


def doctor(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Versions, torch device, ONNX Runtime providers, MediaPipe models, ffmpeg/Chromium/OBS."""
    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    c = Console()
    ok = lambda b: "[green]yes[/]" if b else "[red]no[/]"  # noqa: E731
    c.print("[bold]Packages[/]")
    for k, v in report["packages"].items():
        c.print(f"  {k:24} {v}")
    t = report["torch"]
    c.print(f"[bold]torch device[/]  {t['device']}" + (f" ({t['gpu']})" if t["gpu"] else " (no CUDA GPU)")
            + f", {t['threads']} threads")
    o = report["onnxruntime"]
    c.print(f"[bold]ONNX Runtime[/]  usable: {', '.join(o['usable_providers'])}; "
            f"listed: {', '.join(o['available_providers'])}")
    c.print("[bold]MediaPipe models[/]")
    for k, v in report["mediapipe_models"].items():
        c.print(f"  {k:52} {ok(v)}")
    c.print("[bold]Tools[/]")
    for k, v in report["tools"].items():
        c.print(f"  {k:10} {v or '[red]not found[/]'}")
    c.print(f"[bold]Generators[/]  {', '.join(report['generators'])}")
    chars = report["characters"]
    c.print(f"[bold]Characters[/]  {', '.join(chars) if isinstance(chars, list) else chars}")
