"""Emotion fusion on virtual time: truth tables, priorities, trigger modes, blending, hysteresis."""
from __future__ import annotations

import numpy as np
import pytest

from liveavatar.clock import VirtualClock
from liveavatar.conditioning import Conditioner, load_mapping
from liveavatar.errors import UserError
from liveavatar.types import EMOTIONS, ControlEvent, ControlKind, EventSource, TriggerMode

from .synth import Driver, cues, expression, person, speaking

E = {n: i for i, n in enumerate(EMOTIONS)}


def dominant(c) -> str:
    return EMOTIONS[int(np.argmax(c.emotion))]


def emotion_event(name, mode=TriggerMode.MOMENTARY, hold_s=3.0, intensity=1.0):
    return ControlEvent(ControlKind.EMOTION, name, EventSource.HOTKEY, mode, hold_s, intensity)


FACES = {
    "neutral": expression(),
    "happy": expression(smile=0.7),
    "surprised": expression(brow_raise_left=0.8, brow_raise_right=0.8, mouth_open=0.7),
    "angry": expression(brow_furrow=0.8),
    # Sad: the inner brows drawn up and together (raised alone they are not sad), or a frown.
    "sad": expression(brow_raise_left=0.5, brow_raise_right=0.5, brow_furrow=0.4),
    "excited": expression(smile=0.9, mouth_open=0.8),
    "shy": expression(gaze_y=-0.7, smile=0.25),      # looking down, a little smile
}


# Faces that once read wrongly: wide eyes under raised brows with the mouth shut is surprise
# (it read as sad with tears), and corners pulled down with brows at rest is sad.
MORE_FACES = {
    "surprised": expression(brow_raise_left=0.6, brow_raise_right=0.6, eye_wide_left=0.7, eye_wide_right=0.7),
    "sad": expression(frown=0.6),
}


@pytest.mark.parametrize("expected", list(MORE_FACES))
def test_face_readings_real_faces_got_wrong(drive, expected):
    ticks = drive.run(1.5, lambda t: cues(t, person(), MORE_FACES[expected]))
    assert dominant(ticks[-1]) == expected


@pytest.mark.parametrize("expected", list(FACES))
def test_face_truth_table(drive, expected):
    expr = FACES[expected]
    ticks = drive.run(1.5, lambda t: cues(t, person(), expr))
    assert dominant(ticks[-1]) == expected
    if expected == "neutral":
        assert ticks[-1].emotion_intensity < 0.05
    else:
        assert ticks[-1].emotion_intensity > 0.4


@pytest.mark.parametrize("voice, expected", [
    (speaking(loudness_dbfs=-12, pitch_dev=4.0), "excited"),
    (speaking(loudness_dbfs=-45, pitch_dev=-3.0), "sad"),
    (speaking(loudness_dbfs=-25, pitch_dev=0.0), "neutral"),       # ordinary talking
    (speaking(loudness_dbfs=-12, pitch_dev=-3.0), "neutral"),      # loud but low: not excited
])
def test_voice_truth_table(drive, voice, expected):
    ticks = drive.run(1.5, lambda t: cues(t, person(), expression(), voice))
    assert dominant(ticks[-1]) == expected


def test_face_beats_voice_and_trigger_beats_face(drive, cond):
    loud_happy_voice = speaking(loudness_dbfs=-12, pitch_dev=4.0)     # voice says excited
    smiling = FACES["happy"]                                           # face says happy
    ticks = drive.run(1.5, lambda t: cues(t, person(), smiling, loud_happy_voice))
    assert dominant(ticks[-1]) == "happy"
    cond.push_event(emotion_event("angry", TriggerMode.HOLD, 5.0))
    ticks = drive.run(1.0, lambda t: cues(t, person(), smiling, loud_happy_voice))
    assert dominant(ticks[-1]) == "angry"
    assert ticks[-1].emotion[E["angry"]] > 0.9
    assert cond.state()["emotion"]["dominant"] == "angry"


def test_priority_order_comes_from_the_mapping(tmp_path, clock):
    f = tmp_path / "m.toml"
    f.write_text('[emotion]\npriority = ["face", "trigger", "voice"]\n')
    c = Conditioner(load_mapping(f), clock=clock)
    d = Driver(c, clock)
    c.push_event(emotion_event("angry", TriggerMode.HOLD, 5.0))
    ticks = d.run(1.0, lambda t: cues(t, person(), FACES["happy"]))
    assert dominant(ticks[-1]) == "happy"


def test_a_trigger_reaches_the_very_next_tick(drive, cond):
    drive.run(0.5, lambda t: cues(t, person(), expression()))
    before = cond.tick(int(drive.t * 1e9))
    cond.push_event(emotion_event("surprised"))
    drive.t += cond.period_s
    after = cond.tick(int(drive.t * 1e9))
    assert before.emotion[E["surprised"]] < 0.01
    assert dominant(after) == "surprised"
    assert cond.state()["triggers"][0]["emotion"] == "surprised"


def test_momentary_trigger_decays_over_decay_s(drive, cond, default_mapping):
    decay = default_mapping.emotion.decay_s
    cond.push_event(emotion_event("happy"))
    ticks = drive.run(decay + 1.5, lambda t: cues(t, person(), expression()))
    times = np.array([c.t_tick_ns for c in ticks]) / 1e9 - ticks[0].t_tick_ns / 1e9
    happy = np.array([c.emotion[E["happy"]] for c in ticks])
    # Fades steadily: strong early, about half way at half the decay time, gone after it.
    assert happy[times < 0.2].max() > 0.8
    assert 0.3 < happy[np.argmin(np.abs(times - decay / 2))] < 0.7
    assert np.all(np.diff(happy[times > 0.3]) <= 1e-6)
    assert happy[-1] < 0.02
    assert cond.state()["triggers"] == []


def test_hold_for_n_seconds_then_eases_back(drive, cond):
    cond.push_event(emotion_event("angry", TriggerMode.HOLD, hold_s=3.0))
    ticks = drive.run(2.9, lambda t: cues(t, person(), expression()))
    assert all(dominant(c) == "angry" for c in ticks[2:])
    assert ticks[-1].emotion[E["angry"]] > 0.95
    remaining = cond.state()["triggers"][0]["remaining_s"]
    assert 0.5 < remaining < 0.7          # 0.1 s of hold + 0.5 s release left
    ticks = drive.run(2.0, lambda t: cues(t, person(), expression()))
    angry = np.array([c.emotion[E["angry"]] for c in ticks])
    assert angry[3] > 0.5                                   # still held just after 3 s
    assert np.all(np.diff(angry[3:]) <= 1e-6)               # eases back, never jumps up
    assert dominant(ticks[-1]) == "neutral" and angry[-1] < 0.02


def test_toggle_stays_until_toggled_off(drive, cond):
    cond.push_event(emotion_event("sad", TriggerMode.TOGGLE))
    ticks = drive.run(10.0, lambda t: cues(t, person(), expression()))
    assert dominant(ticks[-1]) == "sad" and cond.state()["triggers"][0]["remaining_s"] is None
    cond.push_event(emotion_event("sad", TriggerMode.TOGGLE))
    ticks = drive.run(1.5, lambda t: cues(t, person(), expression()))
    assert dominant(ticks[-1]) == "neutral"


def test_transitions_blend_over_blend_s(drive, default_mapping):
    ticks = drive.run(0.5, lambda t: cues(t, person(), expression()))
    ticks = drive.run(1.0, lambda t: cues(t, person(), FACES["happy"]))
    happy = np.array([c.emotion[E["happy"]] for c in ticks])
    steps = np.diff(happy)
    assert steps.max() < 0.25                       # no jump
    blend_ticks = int(default_mapping.emotion.blend_s * 30)
    assert happy[1] < 0.3 < happy[blend_ticks + 3]   # gets there within about blend_s


def test_hysteresis_stops_flicker_at_the_threshold(drive, default_mapping):
    thr = default_mapping.face.smile_happy
    rng = np.random.default_rng(1)
    # A smile hovering right at the threshold with tracking noise.
    ticks = drive.run(6.0, lambda t: cues(t, person(), expression(smile=thr + rng.normal(0, 0.03))))
    doms = [dominant(c) for c in ticks[30:]]
    switches = sum(a != b for a, b in zip(doms, doms[1:]))
    assert switches <= 1


def test_laughter_reads_as_happy(drive):
    # "ha-ha-ha": loudness bursts at 5 Hz, pitch above the user's usual, at 30 fps.
    def laugh(t):
        loud = -18.0 if (t * 5.0) % 1.0 < 0.5 else -40.0
        return cues(t, person(), None, speaking(loudness_dbfs=loud, pitch_dev=1.0))
    ticks = drive.run(2.5, laugh)
    assert dominant(ticks[-1]) == "happy"
    # The same voice, steady: not laughter.
    clock = VirtualClock(int(1e11))
    flat = Driver(Conditioner(load_mapping(), clock=clock), clock)
    ticks = flat.run(2.5, lambda t: cues(t, person(), None, speaking(loudness_dbfs=-25.0, pitch_dev=1.0)))
    assert dominant(ticks[-1]) == "neutral"


def test_unknown_names_are_user_errors(cond):
    with pytest.raises(UserError, match="unknown emotion 'furious'"):
        cond.push_event(emotion_event("furious"))
    with pytest.raises(UserError, match="unknown action 'moonwalk'"):
        cond.push_event(ControlEvent(ControlKind.ACTION, "moonwalk"))
    with pytest.raises(UserError, match="intensity"):
        cond.push_event(emotion_event("happy", intensity=3.0))


def test_hotkeys_resolve_from_the_mapping_and_the_obs_names(cond):
    f2 = cond.hotkey("F2")
    assert (f2.kind, f2.name, f2.mode, f2.hold_s, f2.source) == (
        ControlKind.EMOTION, "angry", TriggerMode.HOLD, 3.0, EventSource.HOTKEY)
    obs = cond.hotkey("liveavatar.emotion.shy")
    assert (obs.kind, obs.name) == (ControlKind.EMOTION, "shy")
    act = cond.hotkey("liveavatar.action.spin")
    assert (act.kind, act.name, act.mode) == (ControlKind.ACTION, "spin", TriggerMode.MOMENTARY)
    assert cond.hotkey("liveavatar.action.dance").mode is TriggerMode.TOGGLE   # dance loops
    assert cond.hotkey("liveavatar.emotion.furious") is None
    assert cond.hotkey("F12") is None


def test_trigger_priority_explicit_over_keyword_over_gesture():
    """Unit test of the rank rule (mapping.TRIGGER_RANK): a keyword or gesture never ends or
    covers the streamer's own toggle or hold, for the same emotion or another one."""
    from liveavatar.conditioning.emotion import EmotionEngine
    from liveavatar.types import VoiceFeatures

    eng = EmotionEngine(load_mapping(None))
    sad, happy = EMOTIONS.index("sad"), EMOTIONS.index("happy")
    eng.trigger("sad", TriggerMode.TOGGLE, 0.0, 1.0, EventSource.HOTKEY, 0.0)
    eng.trigger("sad", TriggerMode.TOGGLE, 0.0, 1.0, EventSource.VOICE, 1.0)      # would toggle it off
    eng.trigger("sad", TriggerMode.MOMENTARY, 0.0, 1.0, EventSource.GESTURE, 1.5)  # would shorten it
    eng.trigger("happy", TriggerMode.MOMENTARY, 0.0, 1.0, EventSource.VOICE, 2.0)  # would cover it
    for i in range(60):
        out, _ = eng.update(2.0 + i / 30, 1 / 30, None, 0.0, VoiceFeatures(), 0.0)
    assert out[sad] > 0.95 and out[happy] < 0.05
    # The streamer's own second press does switch it off.
    eng.trigger("sad", TriggerMode.TOGGLE, 0.0, 1.0, EventSource.STUDIO, 4.0)
    for i in range(60):
        out, _ = eng.update(4.0 + i / 30, 1 / 30, None, 0.0, VoiceFeatures(), 0.0)
    assert out[sad] < 0.05
