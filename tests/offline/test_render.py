"""End-to-end offline render on real media: a real person animated, real speech as audio."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from liveavatar.sources.file import count_video_frames, probe
from tests.media import animate, load_rgb, path, write_clip

CLI = [sys.executable, "-m", "liveavatar"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def read_rgba(p: Path) -> np.ndarray:
    """All frames as RGBA; WebM alpha needs the libvpx-vp9 decoder named explicitly."""
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        if s.codec_context.name == "vp9":
            dec = av.codec.CodecContext.create("libvpx-vp9", "r")
            frames = [f.to_ndarray(format="rgba") for pkt in c.demux(s) if pkt.size for f in dec.decode(pkt)]
            frames += [f.to_ndarray(format="rgba") for f in dec.decode(None)]
        else:
            frames = [f.to_ndarray(format="rgba") for f in c.decode(s)]
    return np.stack(frames)


def audio_seconds(p: Path) -> float:
    with av.open(str(p)) as c:
        if not c.streams.audio:
            return 0.0
        n = rate = 0
        for f in c.decode(c.streams.audio[0]):
            n += f.samples
            rate = f.sample_rate
        return n / rate


@pytest.fixture(scope="module")
def talk_webm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render") / "talk.webm"
    r = run_cli("render", path("astronaut_talk.mp4"), "-o", out, "--size", "256", "-q")
    assert r.returncode == 0, r.stderr
    return out


def test_webm_keeps_duration_audio_and_alpha(talk_webm):
    src = path("astronaut_talk.mp4")
    assert abs(count_video_frames(talk_webm) - count_video_frames(src)) <= 1
    assert abs(audio_seconds(talk_webm) - audio_seconds(src)) < 0.1
    frames = read_rgba(talk_webm)
    assert frames.shape[1:] == (256, 256, 4)
    coverage = (frames[..., 3] > 128).mean(axis=(1, 2))
    # The character is drawn on a transparent background: neither empty nor a full rectangle.
    assert coverage.min() > 0.05 and coverage.max() < 0.8
    assert (frames[:, 0, 0, 3] < 16).all(), "corners must be transparent"


def test_mp4_is_h264_with_aac_and_background(tmp_path):
    out = tmp_path / "talk.mp4"
    r = run_cli("render", path("messi_sway.mp4"), "-o", out, "--size", "128", "--background", "#0000ff", "-q")
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
    assert abs(count_video_frames(out) - count_video_frames(path("messi_sway.mp4"))) <= 1
    frames = read_rgba(out)
    corner = frames[:, :8, :8, :3].reshape(-1, 3).mean(axis=0)
    assert corner[2] > 200 and corner[0] < 40, f"corner colour {corner} is not the blue background"


def test_avatar_moves_when_the_person_moves(tmp_path):
    """The same photo, still vs. swaying: the avatar changes more between frames when it moves."""
    img = load_rgb("astronaut.png")
    still = write_clip(tmp_path / "still.mp4", [animate(img, 0.04)[0]] * 60)
    moving = write_clip(tmp_path / "moving.mp4", animate(img, 2.0, motion="shake"))
    diffs = {}
    for name, clip in (("still", still), ("moving", moving)):
        out = tmp_path / f"{name}.webm"
        r = run_cli("render", clip, "-o", out, "--size", "192", "-q")
        assert r.returncode == 0, r.stderr
        f = read_rgba(out).astype(np.int16)
        diffs[name] = np.abs(np.diff(f, axis=0)).mean()
    assert diffs["moving"] > 1.3 * diffs["still"], diffs


def test_video_without_audio_renders_silent(tmp_path):
    out = tmp_path / "nod.webm"
    r = run_cli("render", path("grace_nod.mp4"), "-o", out, "--size", "128", "-q")
    assert r.returncode == 0, r.stderr
    assert not probe(out).has_audio
    assert abs(count_video_frames(out) - count_video_frames(path("grace_nod.mp4"))) <= 1


def test_forced_emotion_changes_the_face(tmp_path, talk_webm):
    out = tmp_path / "angry.webm"
    r = run_cli("render", path("astronaut_talk.mp4"), "-o", out, "--size", "256", "--emotion", "angry", "-q")
    assert r.returncode == 0, r.stderr
    a, b = read_rgba(talk_webm)[10:40].astype(np.int16), read_rgba(out)[10:40].astype(np.int16)
    assert np.abs(a - b).mean() > 1.0


def _zero_frame_clip(p: Path) -> Path:
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height = 64, 64
    return p


@pytest.mark.parametrize("case", ["missing", "not_video", "zero_frames", "unwritable", "bad_character",
                                  "bad_emotion", "bad_suffix"])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    good = path("grace_nod.mp4")
    out = tmp_path / "out.webm"
    args = {
        "missing": [tmp_path / "nope.mp4", "-o", out],
        "not_video": [tmp_path / "text.mp4", "-o", out],
        "zero_frames": [_zero_frame_clip(tmp_path / "empty.mp4"), "-o", out],
        "unwritable": [good, "-o", tmp_path / "no" / "such" / "dir" / "out.webm"],
        "bad_character": [good, "-o", out, "--character", "nobody"],
        "bad_emotion": [good, "-o", out, "--emotion", "grumpy"],
        "bad_suffix": [good, "-o", tmp_path / "out.gif"],
    }[case]
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    r = run_cli("render", *args, "-q")
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.stderr, err
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".webm", ".gif")
                 or ".part" in p.name]
    assert leftovers == []
