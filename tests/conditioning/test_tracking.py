"""Retargeting, mirroring, the fixed output rate (interpolation / extrapolation), idle behaviour,
robustness to missing and broken input, hot reload, state and JSON."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.clock import VirtualClock
from liveavatar.conditioning import Conditioner, conditioning_to_json, load_mapping
from liveavatar.types import (
    ACTIONS,
    BONE_INDEX,
    BONES,
    EMOTIONS,
    FACE_FEATURES,
    FACE_PARAMS,
    FP,
    REST_BONE_ANGLES,
    VISEMES,
    ControlEvent,
    ControlKind,
    Cues,
    EventSource,
    KeywordHit,
    Part,
    TriggerMode,
    VoiceFeatures,
)
from tests.fuzzing import examples

from .synth import Driver, cues, expression, person, speaking

B = BONE_INDEX
UP = np.pi


def ang_dist(a, b):
    return np.abs((np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi)


def settled(drive, make, seconds=1.5):
    return drive.run(seconds, make)[-1]


def test_rest_pose_retargets_to_the_rest_angles(drive):
    c = settled(drive, lambda t: cues(t, person(), expression()))
    assert c.body_present == 1.0
    assert np.all(ang_dist(c.bone_angles, REST_BONE_ANGLES) < 0.12)
    assert np.allclose(c.root, [0, 0, 1], atol=0.02)


def test_mirror_user_raises_right_hand(clock, default_mapping):
    """Mirror on: the character's hand on the image side where the user sees their own raised
    right hand in a selfie preview goes up, i.e. the character's left arm."""
    right_hand_up = person(upper_r=-(np.pi - 0.3), lower_r=-(np.pi - 0.1))
    mirrored = Conditioner(default_mapping, clock=clock)
    c = settled(Driver(mirrored, clock), lambda t: cues(t, right_hand_up))
    assert ang_dist(c.bone_angles[B["upper_arm_l"]], UP) < 0.35
    assert ang_dist(c.bone_angles[B["upper_arm_r"]], REST_BONE_ANGLES[B["upper_arm_r"]]) < 0.12
    direct = Conditioner(default_mapping, clock=clock)
    direct.set_mirror(False)
    c = settled(Driver(direct, clock), lambda t: cues(t, right_hand_up))
    assert ang_dist(c.bone_angles[B["upper_arm_r"]], UP) < 0.35
    assert ang_dist(c.bone_angles[B["upper_arm_l"]], REST_BONE_ANGLES[B["upper_arm_l"]]) < 0.12


# The user turns to their own left (nose to the camera image's right), looks up, tilts their
# head toward their left shoulder (the camera image's right), closes their left eye and looks
# to their left and up (perception's conventions: + = the subject's left, + = up).
USER_HEAD = dict(head_yaw=0.4, head_pitch=0.1, head_roll=0.2, blink_left=1.0, gaze_x=0.5, gaze_y=0.3)


def test_mirror_flips_head_turn_eye_and_position(drive, cond):
    """The character's head is in its image plane: yaw + = faces the image's right, pitch + =
    looks down, roll + = top of the head to the image's left; gaze + = right / down."""
    c = settled(drive, lambda t: cues(t, person(hips=(0.6, 0.78)), expression(**USER_HEAD)))
    # Mirrored: everything the user sees in a selfie preview.
    assert np.allclose(c.head, [-0.4, -0.1, 0.2], atol=0.02)
    assert c.face[FP["blink_right"]] > 0.95 and c.face[FP["blink_left"]] < 0.05
    assert np.allclose(c.face[[FP["gaze_x"], FP["gaze_y"]]], [-0.5, -0.3], atol=0.02)


def test_unmirrored_head_follows_the_camera_image(drive, cond):
    cond.set_mirror(False)
    c = settled(drive, lambda t: cues(t, person(), expression(**USER_HEAD)))
    assert np.allclose(c.head, [0.4, -0.1, -0.2], atol=0.02)
    assert c.face[FP["blink_left"]] > 0.95 and c.face[FP["blink_right"]] < 0.05
    assert np.allclose(c.face[[FP["gaze_x"], FP["gaze_y"]]], [0.5, -0.3], atol=0.02)


def test_scale_and_position_are_relative_to_the_users_home(drive):
    """The default framing ("centre"): the character sways with the user, a little."""
    drive.run(1.0, lambda t: cues(t, person(hips=(0.5, 0.78), height=0.9)))
    c = settled(drive, lambda t: cues(t, person(hips=(0.42, 0.70), height=1.1)), 0.3)
    assert 1.05 < c.root[2] <= 1.15 + 1e-6        # leaned in: bigger, but not by the full 1.2x
    assert 0.02 < c.root[0] <= 0.06 + 1e-6        # moved to the image's left: mirrored -> right
    assert -0.06 - 1e-6 <= c.root[1] < -0.02      # moved up


@pytest.mark.parametrize("framing, reach", [("centre", 0.06), ("follow", 0.35), ("free", 1.0)])
def test_framing_bounds_how_far_the_character_follows(clock, tmp_path, framing, reach):
    """A person walking right across the picture and leaning right in: the character follows
    within the mode's reach, and its size changes by at most scale_range."""
    f = tmp_path / "m.toml"
    f.write_text(f'[tracking]\nframing = "{framing}"\n')
    d = Driver(Conditioner(load_mapping(f), clock=clock), clock)
    d.run(1.0, lambda t: cues(t, person(hips=(0.5, 0.78), height=0.5)))
    ticks = d.run(1.0, lambda t: cues(t, person(hips=(0.5 - 0.4 * (t - 101.0), 0.78), height=0.5 + 0.5 * (t - 101.0))))
    xs = np.array([c.root[0] for c in ticks])
    scales = np.array([c.root[2] for c in ticks])
    assert np.abs(xs).max() <= reach + 1e-6
    assert np.abs(xs).max() > 0.5 * reach          # but it does follow
    assert scales.max() <= 1.15 + 1e-6 and scales.min() >= 0.85 - 1e-6


def test_fixed_output_rate_interpolates_slow_input(clock, default_mapping, tmp_path):
    """10 fps input, 30 fps output: the arm moves smoothly every tick, not in 10 fps steps."""
    f = tmp_path / "m.toml"
    f.write_text("[tracking]\ninterpolation_delay_ms = 100\nsmoothing_s = 0\n")
    c = Conditioner(load_mapping(f), clock=clock)
    d = Driver(c, clock, input_hz=10.0)
    ticks = d.run(3.0, lambda t: cues(t, person(upper_l=0.3 + 0.5 * (t - 100.0))))
    arm = np.array([x.bone_angles[B["upper_arm_r"]] for x in ticks[45:]])   # mirrored
    steps = -np.diff(arm)
    assert len(ticks) == 90
    assert np.all(steps > 0.01)                                    # moves every tick
    assert steps.max() < 2.0 * np.median(steps)                    # evenly


def test_extrapolates_briefly_then_holds_when_perception_stalls(drive, default_mapping):
    moving = lambda t: cues(t, person(upper_l=0.3 + 0.5 * (t - 100.0)))   # noqa: E731
    drive.run(1.0, moving)
    stalled = drive.run(0.4, None)      # no cues
    arm = np.array([x.bone_angles[B["upper_arm_r"]] for x in stalled])
    limit = default_mapping.tracking.max_extrapolation_ms / 1e3
    last_input_s = 1.0 - 1 / 30
    # Keeps moving for `max_extrapolation_ms` past the last input, then holds (mirrored arm).
    assert abs(arm[-1] - arm[-2]) < 1e-4
    assert abs(-arm[-1] - (0.3 + 0.5 * (last_input_s + limit))) < 0.01


def test_idle_when_nobody_is_tracked_never_freezes(drive, default_mapping):
    ticks = drive.run(8.0, lambda t: cues(t))          # cues arrive, but nobody in them
    assert all(c.body_present == 0.0 for c in ticks)
    spine = np.array([c.bone_angles[B["spine"]] for c in ticks])
    blink = np.array([c.face[FP["blink_left"]] for c in ticks])
    gaze = np.array([c.face[FP["gaze_x"]] for c in ticks])
    scale = np.array([c.root[2] for c in ticks])
    assert np.ptp(np.unwrap(spine)) > 0.02            # sway
    assert np.ptp(scale) > 0.005                      # breathing
    assert blink.max() > 0.8 and np.mean(blink > 0.5) < 0.1   # blinks, briefly
    assert len(np.unique(np.round(gaze, 2))) > 3      # glances around
    # No two consecutive frames identical: output never freezes.
    assert all(not np.array_equal(a.bone_angles, b.bone_angles) for a, b in zip(ticks, ticks[1:]))


def test_losing_the_user_eases_into_idle(drive, default_mapping):
    arm_up = person(upper_l=2.5, lower_l=2.8)
    drive.run(1.5, lambda t: cues(t, arm_up))
    ticks = drive.run(3.0, lambda t: cues(t))          # user walked out
    present = np.array([c.body_present for c in ticks])
    lost, blend = default_mapping.tracking.lost_after_s, default_mapping.tracking.idle_blend_s
    assert present[int(lost * 30) - 2] == 1.0
    assert np.all(np.diff(present) <= 0) and np.all(np.diff(present) > -0.05)
    assert present[int((lost + blend) * 30) + 2] == 0.0
    arm = ticks[-1].bone_angles[B["upper_arm_r"]]
    assert ang_dist(arm, REST_BONE_ANGLES[B["upper_arm_r"]]) < 0.1


def test_a_user_found_again_is_followed_sooner_than_a_lost_one_fades(drive, default_mapping):
    arm_up = person(upper_l=2.5, lower_l=2.8)
    drive.run(2.0, lambda t: cues(t))                     # nobody in view: idle
    ticks = drive.run(1.5, lambda t: cues(t, arm_up))     # the user steps in
    present = np.array([c.body_present for c in ticks])
    appear = default_mapping.tracking.appear_blend_s
    assert appear < default_mapping.tracking.idle_blend_s
    assert np.all(np.diff(present) >= 0) and present[0] < 0.5
    assert present[int(appear * 30) + 2] == 1.0
    arm = ticks[-1].bone_angles[B["upper_arm_r"]]
    assert ang_dist(arm, REST_BONE_ANGLES[B["upper_arm_r"]]) > 1.0


def test_lip_sync_follows_the_voice_without_a_face(drive):
    ticks = drive.run(1.0, lambda t: cues(t, person(), None, speaking()))
    c = ticks[-1]
    assert c.speaking > 0.9
    assert c.visemes[VISEMES.index("A")] > 0.5 and abs(c.visemes.sum() - 1) < 1e-5
    assert c.face[FP["mouth_open"]] > 0.4
    quiet = drive.run(1.5, lambda t: cues(t, person(), None, VoiceFeatures(present=True)))[-1]
    assert quiet.speaking < 0.05 and quiet.visemes[0] > 0.95


def test_t_capture_is_the_newest_input_used(drive):
    ticks = drive.run(0.5, lambda t: cues(t, person()))
    assert ticks[0].t_capture_ns == int(100.0 * 1e9)
    caps = [c.t_capture_ns for c in ticks]
    assert caps == sorted(caps) and all(c.t_capture_ns <= c.t_tick_ns for c in ticks)


def _assert_sane(c, n_emotions: int | None = None):
    n_emotions = len(EMOTIONS) if n_emotions is None else n_emotions
    for name in ("bone_angles", "root", "head", "face", "visemes", "emotion"):
        assert np.all(np.isfinite(getattr(c, name))), name
    assert c.bone_angles.shape == (len(BONES),) and np.all(np.abs(c.bone_angles) <= np.pi + 1e-6)
    assert -1 <= c.root[0] <= 1 and -1 <= c.root[1] <= 1 and 0.5 <= c.root[2] <= 2
    assert np.all(np.abs(c.head) <= 0.8 + 1e-6)
    gaze = [FP["gaze_x"], FP["gaze_y"]]
    rest = np.delete(c.face, gaze)
    assert np.all((rest >= 0) & (rest <= 1)) and np.all(np.abs(c.face[gaze]) <= 1)
    for dist in (c.visemes, c.emotion):
        assert np.all(dist >= 0) and abs(float(dist.sum()) - 1.0) < 1e-4
    assert c.emotion.shape == (n_emotions,)
    for x in (c.emotion_intensity, c.action_phase, c.action_weight, c.speaking, c.body_present):
        assert 0.0 <= x <= 1.0
    assert c.action in ACTIONS


_floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
_part = st.tuples(st.booleans(), st.sampled_from(["ok", "nan", "wild", "half", "malformed"]))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.tuples(_part, _part, st.booleans(), _floats, _floats,
                                 st.sampled_from([None, "dance", "happy", "bogus"]),
                                 st.floats(0.0, 0.3)), min_size=1, max_size=25),
       seed=st.integers(0, 2 ** 16))
def test_values_always_finite_and_in_range(default_mapping, frames, seed):
    rng = np.random.default_rng(seed)
    clock = VirtualClock(int(50e9))
    c = Conditioner(default_mapping, clock=clock)
    t = 50.0
    for (pose_on, pose_kind), (face_on, face_kind), voice_on, loud, pitch, word, gap in frames:
        lm = person()
        if pose_kind == "nan":
            lm[rng.integers(0, 33, 5)] = np.nan
        elif pose_kind == "wild":
            lm[:, :3] = rng.normal(0, 50, (33, 3))
            lm[:, 3] = rng.uniform(-1, 2, 33)
        elif pose_kind == "half":
            lm[17:, 3] = 0.0
        elif pose_kind == "malformed":
            lm = lm[:, :3]
        expr = rng.uniform(-3, 3, len(FACE_FEATURES)).astype(np.float32)
        if face_kind == "nan":
            expr[rng.integers(0, len(expr))] = np.nan
        elif face_kind == "malformed":
            expr = expr[:5]
        voice = VoiceFeatures(speaking_prob=float(rng.uniform(-1, 2)), loudness_dbfs=loud,
                              pitch_hz=100.0, pitch_dev=pitch,
                              visemes=rng.uniform(-1, 1, len(VISEMES)).astype(np.float32),
                              present=voice_on)
        cu = Cues(seq=0, t_capture_ns=int(t * 1e9), pose=Part(lm, pose_on, 1.0),
                  face=Part.empty(478), hand_left=Part.empty(21), hand_right=Part.empty(21),
                  expression=expr, expression_present=face_on, voice=voice,
                  keywords=(KeywordHit(word, int(t * 1e9), 1.0),) if word else (),
                  image_size=(int(rng.integers(0, 2000)), int(rng.integers(0, 2000))))
        clock.sleep_until(int(t * 1e9))
        c.push_cues(cu)
        if word == "happy":
            c.push_event(ControlEvent(ControlKind.EMOTION, "happy", EventSource.API,
                                      TriggerMode.TOGGLE))
        for _ in range(int(rng.integers(0, 4))):
            _assert_sane(c.tick(clock.now_ns()))
            clock.advance(1 / 30)
        t += gap + 1e-3
    _assert_sane(c.tick(clock.now_ns()))
    json.dumps(c.state())


def test_before_any_input_the_output_is_the_idle_pose(cond):
    c = cond.tick(int(100e9))
    _assert_sane(c)
    assert c.t_capture_ns == 0 and c.body_present == 0.0 and c.action == "none"


def test_json_has_named_fields(drive, cond):
    cond.push_event(ControlEvent(ControlKind.ACTION, "wave"))
    c = drive.run(0.2, lambda t: cues(t, person(), expression(smile=0.8)))[-1]
    j = conditioning_to_json(c, cond.emotions)
    assert list(j["bones"]) == list(BONES) and list(j["face"]) == list(FACE_PARAMS)
    assert list(j["visemes"]) == list(VISEMES) and list(j["emotion"]) == list(EMOTIONS)
    assert j["action"] == "wave" and 0 < j["action_phase"] < 1
    assert j["face"]["smile"] == round(float(c.face[FP["smile"]]), 4)
    assert json.loads(json.dumps(j)) == j


def test_state_reports_what_is_going_on(drive, cond):
    cond.push_event(cond.hotkey("F2"))
    cond.push_event(ControlEvent(ControlKind.ACTION, "dance", EventSource.API, TriggerMode.HOLD, 4.0))
    drive.run(1.2, lambda t: cues(t, person(), expression()))
    s = json.loads(json.dumps(cond.state()))
    assert s["emotion"]["dominant"] == "angry"
    assert abs(sum(s["emotion"]["distribution"].values()) - 1) < 1e-3
    assert s["triggers"][0]["emotion"] == "angry" and s["triggers"][0]["source"] == "hotkey"
    assert 2.1 < s["triggers"][0]["remaining_s"] < 2.4
    assert s["action"]["name"] == "dance" and 2.7 < s["action"]["remaining_s"] < 2.9
    assert s["body_present"] == 1.0 and s["mirror"] is True


def test_hot_reload_applies_good_files_and_keeps_the_old_mapping_on_errors(tmp_path, clock, caplog):
    f = tmp_path / "live.toml"
    f.write_text('[keywords]\nparty = { action = "dance" }\n')
    c = Conditioner(clock=clock, mapping_path=f)
    d = Driver(c, clock)
    assert c.mapping.keyword_words() == ["party"]
    f.write_text('[keywords]\nparty = { action = "spin" }\n[tracking]\nmirror = false\n')
    import os
    os.utime(f, (1, 1))          # a visible change even within one mtime tick
    assert c.reload_if_changed() is True
    assert c.mapping.keywords["party"].action == "spin" and c.mirror is False
    f.write_text('[keywords]\nparty = { action = "spinn" }\n')
    os.utime(f, (2, 2))
    with caplog.at_level(logging.ERROR):
        assert c.reload_if_changed() is False
    assert f"{f}: keywords.party.action: unknown action 'spinn'" in caplog.text
    assert c.mapping.keywords["party"].action == "spin"
    assert "spinn" in c.state()["mapping_error"]
    # The ticking conditioner picks up a fixed file by itself (checks about once a second).
    f.write_text('[keywords]\nparty = { action = "bow" }\n')
    os.utime(f, (3, 3))
    ticks = d.run(1.5, lambda t: cues(t, person(), keywords=("party",) if t > 101.2 else ()))
    assert ticks[-1].action == "bow"
    assert c.state()["mapping_error"] is None


def test_extra_emotions_from_the_mapping(tmp_path, clock):
    f = tmp_path / "m.toml"
    f.write_text('[emotion]\nnames = ["neutral", "happy", "sad", "angry", "surprised", "excited", "shy", "smug"]\n'
                 '[hotkeys]\nF9 = { emotion = "smug", mode = "hold" }\n')
    c = Conditioner(load_mapping(f), clock=clock)
    c.push_event(c.hotkey("F9"))
    ticks = Driver(c, clock).run(1.0, lambda t: cues(t, person()))
    assert c.emotions[-1] == "smug" and ticks[-1].emotion.shape == (8,)
    assert int(np.argmax(ticks[-1].emotion)) == 7
    assert conditioning_to_json(ticks[-1], c.emotions)["emotion"]["smug"] > 0.9


def test_inputs_from_other_threads_while_ticking(default_mapping):
    """Perception and control threads push while the render thread ticks: no errors, every
    result sane, nothing lost but what latest-wins allows."""
    import threading
    clock = VirtualClock(int(100e9))
    c = Conditioner(default_mapping, clock=clock)
    errors = []

    def perception():
        try:
            for i in range(600):
                c.push_cues(cues(100.0 + i / 30, person(upper_l=0.3 + 0.002 * i), expression(smile=0.5)))
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    def control():
        try:
            for i in range(200):
                c.push_event(ControlEvent(ControlKind.EMOTION, EMOTIONS[i % len(EMOTIONS)]))
                c.push_event(ControlEvent(ControlKind.ACTION, ACTIONS[1 + i % (len(ACTIONS) - 1)]))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=perception), threading.Thread(target=control)]
    for th in threads:
        th.start()
    outs = []
    while any(th.is_alive() for th in threads):
        outs.append(c.tick(int(100e9) + len(outs) * 33_333_333))
    for th in threads:
        th.join()
    outs.append(c.tick(int(100e9) + len(outs) * 33_333_333))
    assert errors == []
    for o in outs:
        _assert_sane(o)
    assert c.cues_seen == 600
    assert outs[-1].t_capture_ns == int(round((100.0 + 599 / 30) * 1e9))
    assert [o.seq for o in outs] == list(range(1, len(outs) + 1))


def test_offline_stream_ticks_at_a_fixed_rate_and_applies_timed_events():
    """conditioning_over (offline render / perceive): 12.5 fps input, 30 fps output, an emotion
    event at 1.0 s shows from that tick on."""
    from liveavatar.conditioning import conditioning_over
    inputs = [cues(10.0 + i * 0.08, person(), expression()) for i in range(25)]   # 2 s at 12.5 fps
    sad = ControlEvent(ControlKind.EMOTION, "sad", EventSource.API, TriggerMode.TOGGLE)
    out = list(conditioning_over(inputs, rate_hz=30.0, events=[(int(11.0e9), sad)]))
    times = np.array([c.t_tick_ns for c in out])
    assert times[0] == int(10e9) and len(out) == 59
    assert np.all(np.diff(times) == 33_333_333)
    sad_w = np.array([c.emotion[EMOTIONS.index("sad")] for c in out])
    first = int(np.argmax(times >= int(11.0e9)))
    assert sad_w[first - 1] == 0.0 and sad_w[first] > 0.5 and sad_w[-1] > 0.95
    # Each tick uses only inputs captured at or before it.
    assert all(c.t_capture_ns <= c.t_tick_ns for c in out)


def test_state_shows_an_event_before_the_next_tick(drive, cond):
    """The API answers a control request with the state: it must already list the trigger."""
    drive.run(0.5, lambda t: cues(t, person()))
    cond.push_event(ControlEvent(ControlKind.EMOTION, "sad", EventSource.OBS, TriggerMode.HOLD, 5.0))
    cond.push_event(ControlEvent(ControlKind.ACTION, "dance", EventSource.STUDIO))
    s = cond.state()
    assert [(t["emotion"], t["mode"], t["source"]) for t in s["triggers"]] == [("sad", "hold", "obs")]
    assert s["action"]["name"] == "dance" and s["action"]["source"] == "studio"
    nxt = drive.run(0.04, lambda t: cues(t, person()))[0]
    assert nxt.action == "dance" and nxt.emotion[EMOTIONS.index("sad")] > 0.5


def test_the_face_shapes_the_mouth_and_speech_takes_over_when_talking(drive):
    """No voice: a silent open mouth opens (A), pursed lips round it (U/O). Speaking: the voice's
    visemes lead, and the face's opening still counts."""
    V = {v: i for i, v in enumerate(VISEMES)}
    silent_open = settled(drive, lambda t: cues(t, person(), expression(mouth_open=0.8, mouth_width=0.5)))
    assert silent_open.face[FP["mouth_open"]] > 0.7
    assert silent_open.visemes[V["closed"]] < 0.3 and np.argmax(silent_open.visemes) == V["A"]
    pursed = settled(drive, lambda t: cues(t, person(), expression(mouth_open=0.1, mouth_width=0.05)))
    assert pursed.visemes[V["U"]] + pursed.visemes[V["O"]] > 0.2 > pursed.visemes[V["A"]]
    # Stretched lips: a grimace with the teeth together is I; once the lips part (an open smile,
    # d0) it is A, widened by mouth_width, never the nearly shut speech shapes I and E.
    grimace = settled(drive, lambda t: cues(t, person(), expression(mouth_open=0.03, mouth_width=1.0)))
    assert np.argmax(grimace.visemes[1:]) + 1 == V["I"]
    open_smile = settled(drive, lambda t: cues(t, person(), expression(mouth_open=0.5, mouth_width=1.0,
                                                                       smile=0.7)))
    assert open_smile.visemes[V["A"]] > 0.4 and open_smile.visemes[V["I"]] + open_smile.visemes[V["E"]] < 0.02
    assert open_smile.face[FP["mouth_width"]] > 0.8
    talking = settled(drive, lambda t: cues(t, person(), expression(mouth_open=0.3, mouth_width=0.5),
                                            voice=speaking()))
    assert np.allclose(talking.visemes, speaking().visemes, atol=0.1)
    assert np.isclose(talking.visemes.sum(), 1.0, atol=1e-4)


def test_a_blink_shows_on_the_tick_it_arrives_while_other_channels_are_smoothed(drive):
    """tracking.smoothing_s leaves the eyes alone: perception already filters them, and a blink
    is over in a few frames (smoothed, the avatar closed its eyes a frame after the person)."""
    open_face = expression(blink_left=0.0, mouth_open=0.0)
    drive.run(1.0, lambda t: cues(t, person(), open_face))
    t0 = drive.t
    shut = drive.run(1 / 30 + 1e-4, lambda t: cues(t, person(), expression(blink_left=1.0, mouth_open=1.0)
                                                    if t >= t0 - 1e-9 else open_face))
    # Mirrored: the subject's left eye is the character's right.
    assert shut[0].face[FP["blink_right"]] > 0.95, shut[0].face
    assert shut[0].face[FP["mouth_open"]] < 0.95, shut[0].face     # the mouth is still smoothed


def test_shut_eyes_are_not_read_as_angry_or_sad(drive):
    """Brows drawn down and corners pulled down read as angry / sad while the eyes are open; the
    same with the eyes shut is someone resting their eyes (d9 read 0.5-0.6 angry or sad then)."""
    E = {e: i for i, e in enumerate(EMOTIONS)}
    scowl = settled(drive, lambda t: cues(t, person(), expression(brow_furrow=0.8)))
    assert scowl.emotion[E["angry"]] > 0.3
    frown = settled(drive, lambda t: cues(t, person(), expression(frown=0.8)))
    assert frown.emotion[E["sad"]] > 0.3
    for shut in (expression(brow_furrow=0.8, blink_left=1.0, blink_right=1.0),
                 expression(frown=0.8, blink_left=1.0, blink_right=1.0)):
        c = settled(drive, lambda t, shut=shut: cues(t, person(), shut), seconds=3.0)
        assert c.emotion[E["angry"]] < 0.05 and c.emotion[E["sad"]] < 0.05, c.emotion
