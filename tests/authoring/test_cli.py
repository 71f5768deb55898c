"""`liveavatar character ...` as a user runs it: exit code 2 and one line on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.authoring.conftest import DRAWINGS, REPO


def run(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIVEAVATAR_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "liveavatar", "character", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("import", "README.md", "--name", "mia"),
                                  ("import", str(DRAWINGS / "char2_texture.png"), "--name", "../up"),
                                  ("import", str(DRAWINGS / "char2_texture.png"), "--name", "bolt"),
                                  ("show", "nobody"), ("remove", "nova")])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    r = run(*args, data=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_import_list_show_remove(tmp_path: Path) -> None:
    r = run("import", str(DRAWINGS / "char3_texture.png"), "--name", "candy", "--licence", "MIT", data=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "characters" / "candy" / "character.json").is_file()
    listed = json.loads(run("list", "--json", data=tmp_path).stdout)
    assert {"name": "candy", "kind": "mesh", "shipped": False} in [{k: e[k] for k in ("name", "kind", "shipped")}
                                                                  for e in listed]
    assert "nova" in [e["name"] for e in listed]
    shown = json.loads(run("show", "candy", data=tmp_path).stdout)
    assert shown["licence"] == "MIT" and shown["format"] == "mesh/1"
    assert run("remove", "candy", data=tmp_path).returncode == 0
    assert not (tmp_path / "characters" / "candy").exists()
    assert run("show", "candy", data=tmp_path).returncode == 2
