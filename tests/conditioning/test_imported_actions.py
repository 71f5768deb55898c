"""Actions as data: real motion capture (../shared/media/bvh) imported, retargeted and played by
the conditioner like a built-in; bad files refused in one line with nothing half-written."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from liveavatar.conditioning import Conditioner, bvh, load_mapping
from liveavatar.conditioning import action_files as af
from liveavatar.types import BONE_INDEX, FF, FP, ControlEvent, ControlKind, EventSource, TriggerMode

from .synth import Driver, cues, expression, person

B = BONE_INDEX
BVH_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "media" / "bvh"
CLIPS = ("jumping_jacks", "dab", "wave_hello", "zombie")


def wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An empty user data folder for this test."""
    monkeypatch.setenv("LIVEAVATAR_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "actions"


@pytest.fixture(scope="module")
def imported():
    return {n: af.import_bvh(BVH_DIR / f"{n}.bvh", n.replace("_", "-")) for n in CLIPS}


@pytest.mark.parametrize("name", CLIPS)
def test_real_bvh_files_import(imported, name, folder):
    act = imported[name]
    motion = bvh.read_bvh(BVH_DIR / f"{name}.bvh")
    assert act.source.layout == ("cmu" if name == "jumping_jacks" else "mixamo/animated-drawings")
    assert act.fps == 30.0
    assert abs(len(act.frames) / 30.0 - (len(motion.frames) - 1) * motion.frame_time) < 0.05
    a = act.array()
    assert np.isfinite(a).all()
    assert (np.abs(wrap(a[:, B["spine"]] - np.pi)) < 0.6).mean() > 0.9     # the performer stands
    # saved and read back: the same action
    path = af.save_action(act)
    assert path == folder / f"{act.name}.json"
    again = af.load_action(path)
    assert np.allclose(again.array(), a, atol=1e-4)


def test_wave_hello_raises_the_right_hand_and_swings_it(imported):
    a = imported["wave_hello"].array()
    lower = a[:, B["lower_arm_r"]]                      # the performer waves with the right hand
    up = np.abs(wrap(lower)) > np.pi / 2                # forearm points above horizontal
    assert up.sum() > 15
    assert np.ptp(np.unwrap(lower[up])) > 0.5           # and swings
    # the left arm stays low while the right one waves
    assert (np.abs(a[up, B["lower_arm_l"]]) < np.pi / 2).all()


def test_jumping_jacks_swing_arms_overhead_and_legs_out(imported):
    a = imported["jumping_jacks"].array()
    assert np.ptp(a[:, B["upper_arm_l"]]) > np.radians(100)
    assert a[:, B["upper_leg_l"]].max() > np.radians(12) and a[:, B["upper_leg_r"]].min() < -np.radians(12)
    # legs spread sideways, so the PCA plane for legs is the frontal one
    assert abs(imported["jumping_jacks"].source.planes_deg["legs"]) < 30


def test_projection_choice_changes_the_zombie_arms():
    frontal = af.import_bvh(BVH_DIR / "zombie.bvh", "z1", projection="frontal").array()
    sagittal = af.import_bvh(BVH_DIR / "zombie.bvh", "z2", projection="arms=sagittal").array()
    # zombie arms reach forward: seen from the side they are out (near horizontal) on each side
    assert np.median(sagittal[:, B["upper_arm_l"]]) > 1.0 and np.median(sagittal[:, B["upper_arm_r"]]) < -1.0
    assert not np.allclose(frontal[:, B["upper_arm_l"]], sagittal[:, B["upper_arm_l"]], atol=0.2)
    with pytest.raises(af.UserError, match="projection 'sideways'"):
        af.import_bvh(BVH_DIR / "zombie.bvh", "z3", projection="sideways")


def test_trim_speed_loop_and_parts(folder):
    act = af.import_bvh(BVH_DIR / "dab.bvh", "dab-part", start_s=2.0, end_s=5.0, loop=True, speed=2.0,
                        parts="arms")
    assert len(act.frames) == 91 and act.loop and act.parts == "arms"
    assert abs(act.duration_s - 91 / 30 / 2) < 1e-6
    assert act.source.start_s == pytest.approx(2.0, abs=0.04) and act.source.end_s == pytest.approx(5.0, abs=0.04)


# -- playing -----------------------------------------------------------------------------------

def _library_with(folder: Path, *acts: af.ActionFile) -> af.ActionLibrary:
    for a in acts:
        af.save_action(a, folder, replace=True)
    return af.ActionLibrary(folder)


def _run(cond, clock, seconds, event=None, make_cues=None):
    d = Driver(cond, clock)
    if event is not None:
        cond.push_event(event)
    return d.run(seconds, make_cues)


def test_imported_action_plays_like_a_built_in(imported, folder, clock):
    act = imported["wave_hello"]
    lib = _library_with(folder, act)
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=lib)
    assert "wave-hello" in cond.actions and cond.actions[:1] == ("none",)
    ev = cond.hotkey("liveavatar.action.wave-hello")
    assert ev is not None and ev.mode is TriggerMode.MOMENTARY
    ticks = _run(cond, clock, act.duration_s + 1.0, ev)
    playing = [c for c in ticks if c.action == "wave-hello"]
    assert len(playing) > 0.9 * act.duration_s * 30
    # the pose is the clip's, with nothing left for the generator to blend, shown with nobody tracked
    full = [c for c in playing if c.body_present > 0.999]
    assert len(full) > 100
    clip = lib.clips["wave-hello"]
    for c in full[::20]:
        want = clip.sample(c.action_phase, np.zeros(af.N_CH, np.float32))
        assert np.abs(wrap(c.bone_angles - want[:af.NB])).max() < 1e-3
        assert c.action_weight == 0.0
    assert ticks[-1].action == "none"
    # eased in: the first frames move only part of the way
    first = playing[0]
    want = clip.sample(first.action_phase, np.zeros(af.N_CH, np.float32))
    assert 0 < first.body_present < 0.5
    assert np.abs(wrap(first.bone_angles - want[:af.NB])).max() > 0.05


def test_unknown_action_still_refused(folder, clock):
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=af.ActionLibrary(folder))
    with pytest.raises(af.UserError, match="unknown action 'floss'"):
        cond.push_event(ControlEvent(ControlKind.ACTION, "floss"))


def test_arms_mask_leaves_tracked_legs_and_the_face_alone(imported, folder, clock):
    act = af.import_bvh(BVH_DIR / "jumping_jacks.bvh", "jj-arms", parts="arms", loop=True)
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=_library_with(folder, act))
    expr = expression(mouth_open=0.8, blink_left=1.0, smile=0.7)

    def tracked(t):
        return cues(t, person(upper_l=0.3, upper_r=-0.3), expr)

    _run(cond, clock, 1.5, None, tracked)
    before = _run(cond, clock, 0.2, None, tracked)[-1]
    ticks = _run(cond, clock, 2.0, ControlEvent(ControlKind.ACTION, "jj-arms", mode=TriggerMode.TOGGLE), tracked)
    during = ticks[-1]
    assert during.action == "jj-arms"
    legs = [B[n] for n in ("upper_leg_l", "lower_leg_l", "upper_leg_r", "lower_leg_r")]
    assert np.abs(wrap(during.bone_angles[legs] - before.bone_angles[legs])).max() < 0.05
    arm_motion = np.ptp(np.unwrap([c.bone_angles[B["upper_arm_l"]] for c in ticks[30:]]))
    assert arm_motion > 1.0
    # face tracking continues: the streamer's mouth, eyes and smile
    assert during.face[FP["mouth_open"]] == pytest.approx(before.face[FP["mouth_open"]], abs=0.02)
    assert during.face[FP["smile"]] == pytest.approx(before.face[FP["smile"]], abs=0.02)
    assert during.face[FP["blink_left"]] == pytest.approx(before.face[FP["blink_left"]], abs=0.02)
    assert expr[FF["mouth_open"]] > 0.5


def test_keyword_in_the_mapping_file_triggers_an_imported_action(imported, folder, clock, tmp_path):
    lib = _library_with(folder, imported["dab"])
    mapping = tmp_path / "m.toml"
    mapping.write_text('[keywords]\ndab = { action = "dab" }\n')
    m = load_mapping(mapping)                     # knows the actions folder's names
    assert m.keywords["dab"].action == "dab"
    cond = Conditioner(m, rate_hz=30.0, clock=clock, actions=lib)
    said = []

    def voice(t):                 # the keyword once, then plain cues
        said.append(t)
        return cues(t, keywords=("dab",) if len(said) == 1 else ())

    assert any(c.action == "dab" for c in Driver(cond, clock).run(0.5, voice))
    assert cond.state()["action"]["source"] == EventSource.VOICE.value
    bad = tmp_path / "bad.toml"
    bad.write_text('[keywords]\nfloss = { action = "floss" }\n')
    with pytest.raises(af.UserError, match="unknown action 'floss'"):
        load_mapping(bad)


def test_character_actions_come_first_and_may_redefine_a_built_in(imported, folder, tmp_path, clock):
    own = tmp_path / "pack" / "actions"
    wave = imported["wave_hello"].model_copy(update={"name": "wave"})
    af.save_action(wave, own)
    af.save_action(imported["dab"], folder)
    lib = af.ActionLibrary(folder, own)
    assert set(lib.clips) == {"wave", "dab"} and lib.clips["wave"].origin == "character"
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=lib)
    ticks = _run(cond, clock, 1.5, ControlEvent(ControlKind.ACTION, "wave"))
    # the character's own wave is baked into the bones; the generator's built-in wave is not asked for
    assert ticks[-1].action == "wave" and ticks[-1].action_weight == 0.0
    cond.reload_actions(None)                  # a character without its own set: the built-in again
    ticks = _run(cond, clock, 3.0, ControlEvent(ControlKind.ACTION, "wave"))
    assert max(c.action_weight for c in ticks) > 0.9


def test_a_new_file_in_the_folder_is_picked_up(imported, folder, clock):
    lib = af.ActionLibrary(folder)
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=lib)
    assert "zombie" not in cond.actions
    af.save_action(imported["zombie"], folder)
    _run(cond, clock, 1.2)
    assert "zombie" in cond.actions


# -- round trip: record -> export BVH -> import ----------------------------------------------

def test_record_export_import_round_trip(folder, clock):
    cond = Conditioner(load_mapping(), rate_hz=30.0, clock=clock, actions=af.ActionLibrary(folder))

    def moving(t):   # a streamer raising and lowering both arms, swaying
        s = np.sin(2 * np.pi * 0.7 * t)
        return cues(t, person(upper_l=1.2 + s, lower_l=1.5 + 1.2 * s, upper_r=-0.8 + 0.5 * s,
                              lower_r=-0.4 - s, hips=(0.5 + 0.03 * s, 0.78)))

    _run(cond, clock, 1.0, None, moving)
    take = cond.start_take(3.0)
    _run(cond, clock, 3.3, None, moving)
    assert take.done
    bones, root = take.motion()
    assert np.ptp(bones[:, B["upper_arm_l"]]) > 0.6
    rec = af.make_action("my-take", bones, root, 30.0, source=af.ActionSource(kind="recorded"))
    af.save_action(rec)
    text = af.export_bvh(rec)
    out = folder.parent / "take.bvh"
    out.write_text(text)
    again = af.import_bvh(out, "my-take-again", projection="frontal")
    a, b = rec.array(), again.array()
    assert len(a) == len(b)
    assert np.degrees(np.abs(wrap(a[:, :af.NB] - b[:, :af.NB]))).max() < 0.5
    assert np.abs(b[:, af.NB:af.NB + 2] - (a[:, af.NB:af.NB + 2] - a[0, af.NB:af.NB + 2])).max() < 2e-3


# -- bad input: one line, exit 2, nothing written -----------------------------------------------

def _cli(args, capsys, monkeypatch):
    from liveavatar.cli import main
    monkeypatch.setenv("LIVEAVATAR_NATIVE_LOGS", "1")
    monkeypatch.setattr(sys, "argv", ["liveavatar", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _variant(tmp_path: Path, name: str, edit) -> Path:
    text = (BVH_DIR / "wave_hello.bvh").read_text()
    p = tmp_path / f"{name}.bvh"
    p.write_text(edit(text))
    return p


def _swap_line(text: str, k: int, f) -> str:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time")) + 1
    lines[start + k] = f(lines[start + k])
    return "\n".join(lines) + "\n"


XYZ = "CHANNELS 3 Xrotation Yrotation Zrotation"
BAD = {
    "truncated": (lambda t: t[:len(t) // 2], "truncated: declares 839 frames but has"),
    "truncated-hierarchy": (lambda t: t[:t.index("JOINT LeftUpLeg")] + "MOTION\n", "truncated hierarchy"),
    "short-frame": (lambda t: _swap_line(t, 10, lambda ln: " ".join(ln.split()[:-3])),
                    "frame 11 has 81 values; the hierarchy declares 84 channels"),
    "channel-count": (lambda t: t.replace(XYZ, "CHANNELS 2 Xrotation Yrotation Zrotation", 1),
                      "joint 'Spine': more channel names than its CHANNELS count 2"),
    "channels-vs-data": (lambda t: t.replace(XYZ, "CHANNELS 2 Xrotation Yrotation", 1),
                         "frame 1 has 84 values; the hierarchy declares 83 channels"),
    "nan": (lambda t: _swap_line(t, 5, lambda ln: ln.replace(ln.split()[7], "nan", 1)),
            "frame 6: NaN or infinite value"),
    "word": (lambda t: _swap_line(t, 5, lambda ln: ln.replace(ln.split()[7], "x12", 1)),
             "frame 6: 'x12' is not a number"),
    "inf-exp": (lambda t: _swap_line(t, 5, lambda ln: ln.replace(ln.split()[7], "1e999", 1)),
                "frame 6: NaN or infinite value"),
    "absurd": (lambda t: _swap_line(t, 7, lambda ln: ln.replace(ln.split()[4], "123456789", 1)),
               "frame 8: absurd value 1.23457e+08"),
    "million-frames": (lambda t: t.replace("Frames: 839", "Frames: 1000000"),
                       "1000000 frames is more than the 100000"),
    "unknown-layout": (lambda t: t.replace("LeftForeArm", "LeftBit").replace("RightUpLeg", "RThing"),
                       "unknown joint layout: found Hips, Spine"),
    "not-bvh": (lambda t: "hello world\n", "not a BVH file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bvh_one_line_exit_2_nothing_written(case, tmp_path, folder, capsys, monkeypatch):
    edit, message = BAD[case]
    p = _variant(tmp_path, case, edit)
    code, out, err = _cli(["action", "import", str(p), "--name", "bad-one"], capsys, monkeypatch)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not folder.exists() or list(os.listdir(folder)) == []


def test_unknown_layout_says_what_is_missing(tmp_path, capsys, monkeypatch, folder):
    p = _variant(tmp_path, "layout", BAD["unknown-layout"][0])
    _, _, err = _cli(["action", "import", str(p), "--name", "x"], capsys, monkeypatch)
    assert "missing left elbow (LeftForearm/LeftElbow), right hip (RightUpleg/RightUpperleg)" in err
    assert "LeftBit" in err and "RThing" in err


@pytest.mark.parametrize(("name", "message"), [
    ("wave", "'wave' is a built-in action; choose another name"),
    ("none", "'none' is a built-in action"),
    ("Bad\nName", "action name 'Bad?Name': use 1-40 lower-case letters"),
])
def test_bad_names(name, message, capsys, monkeypatch, folder):
    code, _, err = _cli(["action", "import", str(BVH_DIR / "dab.bvh"), "--name", name], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not folder.exists() or list(os.listdir(folder)) == []


def test_name_taken_and_cli_list_show_remove_export(capsys, monkeypatch, folder, tmp_path):
    assert _cli(["action", "import", str(BVH_DIR / "dab.bvh"), "--name", "dab", "--end", "3"],
                capsys, monkeypatch)[0] == 0
    code, _, err = _cli(["action", "import", str(BVH_DIR / "dab.bvh"), "--name", "dab"], capsys, monkeypatch)
    assert code == 2 and "exists already" in err
    code, out, _ = _cli(["action", "list"], capsys, monkeypatch)
    assert "dab" in out and "imported" in out and "wave" in out
    code, out, _ = _cli(["action", "show", "dab"], capsys, monkeypatch)
    assert '"layout": "mixamo/animated-drawings"' in out
    out_bvh = tmp_path / "dab-out.bvh"
    _cli(["action", "export", "dab", "-o", str(out_bvh)], capsys, monkeypatch)
    assert bvh.read_bvh(out_bvh).frames.shape[0] == len(af.load_action(folder / "dab.json").frames)
    code, _, err = _cli(["action", "export", "nope", "-o", str(out_bvh)], capsys, monkeypatch)
    assert code == 2 and "no such action file" in err
    _cli(["action", "remove", "dab"], capsys, monkeypatch)
    assert list(os.listdir(folder)) == []
    code, _, err = _cli(["action", "remove", "dab"], capsys, monkeypatch)
    assert code == 2 and "no imported action called 'dab'" in err
    code, _, err = _cli(["action", "remove", "wave"], capsys, monkeypatch)
    assert code == 2 and "built-in" in err


def test_bad_action_files_are_skipped_with_a_reason(folder, imported):
    af.save_action(imported["dab"], folder)
    (folder / "broken.json").write_text('{"format": "liveavatar-action", "version": 1, "name": "broken"')
    nan = imported["dab"].model_dump()
    nan["name"] = "nan-one"
    nan["frames"][3][2] = float("nan")
    import json
    (folder / "nan-one.json").write_text(json.dumps(nan))
    lib = af.ActionLibrary(folder)
    assert set(lib.clips) == {"dab"}
    assert len(lib.errors) == 2 and all("\n" not in e for e in lib.errors)
