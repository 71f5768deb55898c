"""Broken model files and bad commands give one clear line naming the file, never a traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from liveavatar.errors import ConfigError, NotFoundError, UserError
from liveavatar.generation.neural import NeuralGenerator, manifest
from liveavatar.generation.neural.export import export
from liveavatar.generation.neural.model import NeuralAvatarNet

from .conftest import small_config


@pytest.fixture
def folder(tmp_path, exported):
    dst = tmp_path / "neural"
    shutil.copytree(exported, dst)
    return dst


def _set_entry(folder, **changes):
    p = folder / "manifest.json"
    man = json.loads(p.read_text())
    for m in man["models"]:
        if m["character"] == "nova":
            m.update(changes)
    p.write_text(json.dumps(man))


def test_corrupt_file_names_the_file(folder):
    path = folder / "nova.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    _set_entry(folder, sha256=manifest.sha256_of(path))      # the manifest agrees: a corrupt export
    with pytest.raises(ConfigError, match=r"nova\.onnx: not a loadable ONNX model"):
        NeuralGenerator(model_dir=folder).prepare_character("nova")


def test_changed_file_fails_the_checksum(folder):
    with open(folder / "nova.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match=r"nova\.onnx: sha256 .* does not match"):
        NeuralGenerator(model_dir=folder).prepare_character("nova")


def test_wrong_shapes_name_the_file_and_tensor(folder):
    # a 128-pixel network where the manifest promises the 256-pixel one
    small = NeuralAvatarNet(small_config())
    info = manifest.Training(mode="from-character", source="nova")
    promised = manifest.read(folder).find("nova")
    export(small, folder, "nova", info)
    _set_entry(folder, inputs=[s.model_dump() for s in promised.inputs],
               outputs=[s.model_dump() for s in promised.outputs])
    with pytest.raises(ConfigError, match=r"nova\.onnx: input 'state' has shape \['batch', 4, 32, 32\], "
                                          r"expected \['batch', 4, 64, 64\]"):
        NeuralGenerator(model_dir=folder).prepare_character("nova")


def test_bad_manifest_names_the_manifest_and_key(folder):
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"manifest\.json: not valid JSON"):
        NeuralGenerator(model_dir=folder).characters()
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "models": [{"character": "x"}]}))
    with pytest.raises(ConfigError, match=r"manifest\.json: models\.0\.file: Field required"):
        NeuralGenerator(model_dir=folder).characters()


def test_missing_model_and_unknown_character(folder, tmp_path):
    (folder / "nova.onnx").unlink()
    with pytest.raises(ConfigError, match=r"nova\.onnx: model file missing"):
        NeuralGenerator(model_dir=folder).prepare_character("nova")
    with pytest.raises(NotFoundError, match="no neural model for character 'zed'"):
        NeuralGenerator(model_dir=folder).prepare_character("zed")
    with pytest.raises(NotFoundError, match="train one with `liveavatar train`"):
        NeuralGenerator(model_dir=tmp_path / "empty").load()


@pytest.mark.parametrize("args, message", [
    (["--from-video", "no_such_clip.mp4"], "no_such_clip.mp4: no such video file"),
    ([], "give exactly one of --from-character NAME or --from-video FILE"),
    (["--from-character", "nobody", "--run-dir", "RUN"], "unknown character 'nobody'"),
    (["--from-character", "nova", "--widths", "8,8"], "--widths '8,8'"),
])
def test_train_command_errors_are_one_line(args, message, tmp_path):
    from liveavatar import cli
    args = [a.replace("RUN", str(tmp_path / "run")) for a in args]
    with pytest.raises(UserError) as err:      # cli.main prints exactly this as "error: ..."
        cli.app(["train", *args], standalone_mode=False)
    assert message in str(err.value) and "\n" not in str(err.value) and err.value.exit_code == 2


def test_train_command_error_reaches_the_shell_as_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "liveavatar.cli", "train", "--from-video", "gone.mp4"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: gone.mp4: no such video file"
