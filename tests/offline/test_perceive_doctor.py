"""`perceive` and `doctor` as users run them, on real photos and clips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.media import animate, load_rgb, path, read_wav, speak, write_clip, write_wav
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


@pytest.fixture(scope="module")
def dance_at_the_end(tmp_path_factory):
    """A real face with espeak-ng saying "okay everyone, time to dance" as the very last thing in
    the file: no silence after "dance" (the video lasts as long as the audio)."""
    tmp = tmp_path_factory.mktemp("dance_end")
    speech, rate = read_wav(speak("okay everyone, time to dance", tmp / "speech.wav"))
    audio = np.concatenate([np.zeros(rate // 2, np.float32), speech])
    write_wav(tmp / "audio.wav", audio, rate)
    frames = animate(load_rgb("astronaut.png"), len(audio) / rate, size=(320, 240))
    return write_clip(tmp / "dance_at_the_end.mp4", frames, audio=tmp / "audio.wav")


def test_perceive_hears_a_keyword_said_at_the_very_end(dance_at_the_end):
    r = run_cli("perceive", dance_at_the_end, "--json")
    assert r.returncode == 0, r.stderr
    heard = [k["word"] for rec in _lines(r.stdout) for k in rec["keywords"]]
    assert heard == ["dance"], heard


def test_render_hears_a_keyword_said_at_the_very_end(dance_at_the_end, tmp_path):
    r = run_cli("render", dance_at_the_end, "-o", tmp_path / "out.mp4", "--size", "128")
    assert r.returncode == 0, r.stderr
    assert "keywords heard: dance" in " ".join(r.stderr.split()), r.stderr
