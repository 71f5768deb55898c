"""`liveavatar bench all` leaves out bench sfu on a machine without Janus, and says why (in the
output and in bench.md / bench.json), instead of failing the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OTHERS = "perception,conditioning,actions,rig2d,neural,neural_quality,render,e2e,e2e_512,e2e_busy,feed,fidelity,workers"


def test_bench_all_without_janus_leaves_sfu_out_with_the_reason(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "COLUMNS": "200"}   # no janus on this PATH
    r = subprocess.run([sys.executable, "-m", "liveavatar", "bench", "all", "--quick", "--skip", OTHERS,
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bench sfu: left out, Debian's janus is not installed" in r.stdout
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert list(doc["not_run"]) == ["sfu"] and doc["results"] == [] and doc["failures"] == {}
    assert "Not run: sfu: Debian's janus is not installed" in (tmp_path / "out" / "bench.md").read_text()
