"""Triggered actions (phase, blend in/out, live head and face on top) and gesture recognition on
synthetic landmark sequences."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.conditioning.gestures import GestureRecognizer
from liveavatar.types import EMOTIONS, ControlEvent, ControlKind, EventSource, TriggerMode

from .synth import ASPECT, cues, expression, person


def action_event(name, mode=TriggerMode.MOMENTARY, hold_s=3.0, source=EventSource.API):
    return ControlEvent(ControlKind.ACTION, name, source, mode, hold_s)


def test_spoken_keyword_starts_the_action_on_the_next_tick(drive, cond, default_mapping):
    drive.run(0.5, lambda t: cues(t, person(), expression()))
    said = {"at": drive.t}
    ticks = drive.run(7.0, lambda t: cues(t, person(), expression(),
                                          keywords=("dance",) if abs(t - said["at"]) < 0.2 else ()))
    assert ticks[0].action == "dance" and ticks[0].action_weight > 0
    hold = default_mapping.keywords["dance"].hold_s
    dancing = [c for c in ticks if c.action == "dance"]
    # Perception repeats the same hit in several cues: it still starts the dance only once.
    assert len(dancing) == pytest.approx(hold * 30, abs=2)
    phases = np.array([c.action_phase for c in dancing])
    assert np.all((phases >= 0) & (phases <= 1))
    assert np.sum(np.diff(phases) < 0) == pytest.approx(hold / default_mapping.actions["dance"].duration_s, abs=1)
    weights = np.array([c.action_weight for c in dancing])
    assert weights[0] < 0.5 and weights[len(weights) // 2] == 1.0 and weights[-1] < 0.2
    assert ticks[-1].action == "none" and ticks[-1].action_weight == 0.0


def test_momentary_action_plays_once_with_blend_in_and_out(drive, cond, default_mapping):
    spec = default_mapping.actions["jump"]
    cond.push_event(action_event("jump"))
    ticks = drive.run(spec.duration_s + 0.5, lambda t: cues(t, person(), expression()))
    playing = [c for c in ticks if c.action == "jump"]
    phases = np.array([c.action_phase for c in playing])
    weights = np.array([c.action_weight for c in playing])
    assert np.all(np.diff(phases) > 0) and phases[-1] > 0.9
    assert len(playing) == pytest.approx(spec.duration_s * 30, abs=1)
    peak = int(np.argmax(weights))
    assert weights[peak] == 1.0
    assert np.all(np.diff(weights[:peak + 1]) >= 0) and np.all(np.diff(weights[peak:]) <= 1e-9)


def test_toggle_action_runs_until_toggled_off(drive, cond):
    cond.push_event(cond.hotkey("F5"))                # dance, toggle
    ticks = drive.run(8.0, lambda t: cues(t, person(), expression()))
    assert all(c.action == "dance" for c in ticks)
    assert cond.state()["action"]["remaining_s"] is None
    cond.push_event(cond.hotkey("F5"))
    ticks = drive.run(1.0, lambda t: cues(t, person(), expression()))
    assert ticks[-1].action == "none"


def test_action_blends_with_live_head_and_face(drive, cond):
    """While dancing, head, face and lip sync still follow the user."""
    def looking_around(t):
        return cues(t, person(), expression(head_yaw=0.5 * np.sin(2 * t), smile=0.8, mouth_open=0.5))
    drive.run(1.5, looking_around)     # tracking has eased in
    cond.push_event(action_event("dance", TriggerMode.HOLD, 5.0))
    ticks = drive.run(3.0, looking_around)
    mid = [c for c in ticks[15:] if c.action == "dance"]
    assert len(mid) == len(ticks) - 15
    yaw = np.array([c.head[0] for c in mid])
    expected = np.array([-0.5 * np.sin(2 * c.t_tick_ns / 1e9) for c in mid])   # mirrored
    assert np.corrcoef(yaw, expected)[0, 1] > 0.95
    assert all(c.face[6] > 0.6 for c in mid)          # smile kept
    assert all(c.action_weight == 1.0 for c in mid[10:40])


def test_gesture_does_not_interrupt_a_triggered_action(drive, cond):
    cond.push_event(action_event("bow", TriggerMode.HOLD, 3.0))
    drive.run(0.2, lambda t: cues(t, person(), expression()))
    cond.push_event(action_event("wave", source=EventSource.GESTURE))
    ticks = drive.run(0.5, lambda t: cues(t, person(), expression()))
    assert all(c.action == "bow" for c in ticks)
    # ...but another trigger does.
    cond.push_event(action_event("spin"))
    assert drive.run(0.1, lambda t: cues(t, person(), expression()))[0].action == "spin"


# --- gestures on synthetic landmark sequences -------------------------------------------------

def _run(make_pose, seconds=2.0, fps=30.0, expr=None):
    rec = GestureRecognizer(window_s=1.5, cooldown_s=1.5)
    seen = []
    for i in range(int(seconds * fps)):
        t = i / fps
        e = expr(t) if expr else None
        seen += rec.push(t, make_pose(t), ASPECT, e)
    return set(seen)


def wave(t):      # subject's right forearm up, swinging 2 Hz
    return person(upper_r=-2.0, lower_r=np.pi + 0.5 * np.sin(2 * np.pi * 2 * t))


def clap(t):      # hands meeting in front of the chest twice a second
    forearm = -np.pi / 2 + 0.6 + 0.6 * np.sin(2 * np.pi * 2 * t)   # -pi/2: towards the middle
    return person(upper_l=0.3, lower_l=forearm, upper_r=-0.3, lower_r=-forearm)


def cheer(t):     # both arms straight up
    return person(upper_l=np.pi - 0.3, lower_l=np.pi - 0.2, upper_r=-(np.pi - 0.3), lower_r=-(np.pi - 0.2))


def point(t):     # subject's left arm straight out sideways
    return person(upper_l=1.5, lower_l=1.5)


def nod_pose(t):  # nose bobbing relative to the shoulders (no face mesh)
    return person(nose_dy=0.04 * np.sin(2 * np.pi * 1.5 * t))


def shake_pose(t):
    return person(nose_dx=0.05 * np.sin(2 * np.pi * 2 * t))


def still(t):
    return person()


def walk_sway(t):  # whole body moving side to side and bobbing: not a head gesture
    return person(hips=(0.5 + 0.08 * np.sin(2 * np.pi * 1.5 * t), 0.78 + 0.02 * np.sin(2 * np.pi * 3 * t)))


@pytest.mark.parametrize("make_pose, expected", [
    (wave, {"wave"}), (clap, {"clap"}), (cheer, {"cheer"}), (point, {"point"}),
    (nod_pose, {"nod"}), (shake_pose, {"head_shake"}), (still, set()), (walk_sway, set()),
])
def test_gestures_from_pose_sequences(make_pose, expected):
    assert _run(make_pose) == expected


def test_nod_and_shake_from_face_mesh_angles():
    nod = _run(still, expr=lambda t: expression(head_pitch=0.2 * np.sin(2 * np.pi * 1.5 * t)))
    shake = _run(still, expr=lambda t: expression(head_yaw=0.25 * np.sin(2 * np.pi * 2 * t)))
    tiny = _run(still, expr=lambda t: expression(head_yaw=0.03 * np.sin(2 * np.pi * 2 * t)))
    assert (nod, shake, tiny) == ({"nod"}, {"head_shake"}, set())


def test_recognised_gesture_triggers_the_mapped_emotion(drive, cond):
    ticks = drive.run(2.0, lambda t: cues(t, cheer(t), expression()))
    assert cond.state()["gesture"]["name"] == "cheer"
    assert EMOTIONS[int(np.argmax(ticks[-1].emotion))] == "excited"
    assert cond.state()["triggers"][0]["source"] == "gesture"
