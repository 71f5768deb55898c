"""`perceive` and `doctor` as users run them, on real photos and clips."""
from __future__ import annotations

import json

from tests.media import path
from tests.offline.test_render import run_cli


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_perceive_finds_a_body_on_messi():
    r = run_cli("perceive", path("messi5.jpg"), "--json")
    assert r.returncode == 0, r.stderr
    (rec,) = _lines(r.stdout)
    assert rec["pose"]["present"] and rec["pose"]["confidence"] > 0.5


def test_perceive_finds_a_face_on_astronaut_and_it_smiles_more_than_grace_hopper():
    recs = {}
    for name in ("astronaut.png", "grace_hopper.jpg"):
        r = run_cli("perceive", path(name))
        assert r.returncode == 0, r.stderr
        (recs[name],) = _lines(r.stdout)
        assert recs[name]["face"]["present"]
    assert recs["astronaut.png"]["expression"]["smile"] > recs["grace_hopper.jpg"]["expression"]["smile"]


def test_perceive_video_hears_speech_and_prints_conditioning():
    r = run_cli("perceive", path("astronaut_talk.mp4"), "--max-frames", "150")
    assert r.returncode == 0, r.stderr
    recs = _lines(r.stdout)
    assert len(recs) == 150
    assert sum(x["face"]["present"] for x in recs) > 140
    assert max(x["voice"]["speaking_prob"] for x in recs) > 0.5
    r = run_cli("perceive", path("astronaut_talk.mp4"), "--conditioning", "--max-frames", "60")
    assert r.returncode == 0, r.stderr
    conds = _lines(r.stdout)
    assert len(conds) == 60
    emo = conds[-1]["emotion"]
    assert abs(sum(emo.values() if isinstance(emo, dict) else emo["distribution"].values()) - 1) < 1e-3


def test_perceive_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("nope")
    for target in (bad, tmp_path / "missing.mp4"):
        r = run_cli("perceive", target)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_doctor_reports_what_really_runs():
    r = run_cli("doctor", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["torch"]["device"] in ("cpu", "cuda")
    assert "CPUExecutionProvider" in rep["onnxruntime"]["usable_providers"]
    assert all(rep["mediapipe_models"].values()), rep["mediapipe_models"]
    assert rep["tools"]["ffmpeg"] and "rig2d" in rep["generators"]
    assert "nova" in rep["characters"]
