"""Conditioning on real media through real MediaPipe (liveavatar.perception): real photos and
clips of people, mirrored and not; gestures on sequences derived from real landmarks; and the
`liveavatar perceive --conditioning` command on a real talking clip."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from liveavatar.conditioning import conditioning_over
from liveavatar.conditioning.gestures import GestureRecognizer
from liveavatar.perception import Perception
from liveavatar.sources.file import iter_media
from liveavatar.types import BONE_INDEX, EMOTIONS, AudioChunk, CapturedFrame, Cues
from tests.holding import hold
from tests.media import load_rgb, path

B = BONE_INDEX


@pytest.fixture(scope="module")
def still_perception():
    with Perception(static=True, enable_voice=False) as p:
        yield p


def _still_cues(perception, name: str, flip: bool = False) -> Cues:
    img = load_rgb(name)
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    cues = perception.process_video(CapturedFrame(img, 0, int(1e9)))
    assert cues.pose.present
    return cues


def test_real_raised_arm_is_mirrored_like_a_selfie_preview(still_perception):
    """messi5: his right arm is raised (image left). Mirrored, the character's left arm (image
    right) goes up; the flipped photo, not mirrored, gives the same pose."""
    _, mirrored = hold(_still_cues(still_perception, "messi5.jpg"), mirror=True)
    _, flipped = hold(_still_cues(still_perception, "messi5.jpg", flip=True), mirror=False)
    up_l = abs(mirrored.bone_angles[B["upper_arm_l"]])
    up_r = abs(mirrored.bone_angles[B["upper_arm_r"]])
    assert up_l > np.pi / 2 > up_r                    # left above horizontal, right below
    diff = np.abs((mirrored.bone_angles - flipped.bone_angles + np.pi) % (2 * np.pi) - np.pi)
    assert diff[:6].max() < 0.25                      # spine, neck and arms agree
    assert abs(mirrored.root[2] - 1.0) < 0.05


@pytest.mark.parametrize("photo, expected", [("astronaut.png", "happy"), ("grace_hopper.jpg", "neutral")])
def test_real_faces_read_as_the_right_emotion(still_perception, photo, expected):
    c, out = hold(_still_cues(still_perception, photo), mirror=True)
    assert EMOTIONS[int(np.argmax(out.emotion))] == expected
    assert c.state()["emotion"]["dominant"] == expected
    # An upright portrait: spine and neck point up.
    assert abs(abs(out.bone_angles[B["spine"]]) - np.pi) < 0.2
    assert abs(abs(out.bone_angles[B["neck"]]) - np.pi) < 0.35


def _rotate_about(points: np.ndarray, centre: np.ndarray, angle: float, aspect: float) -> np.ndarray:
    """Rotate normalised image points about `centre` in pixel-true geometry."""
    d = (points - centre) * [aspect, 1.0]
    c, s = np.cos(angle), np.sin(angle)
    return centre + (d @ np.array([[c, s], [-s, c]])) / [aspect, 1.0]


def test_wave_on_a_sequence_derived_from_real_landmarks(still_perception):
    """messi5's real landmarks; his raised right forearm is swung about the elbow like a wave."""
    cues = _still_cues(still_perception, "messi5.jpg")
    real = cues.pose.landmarks.copy()
    h, w = load_rgb("messi5.jpg").shape[:2]
    aspect = w / h
    # Stand the forearm up first (wrist straight above the elbow), keeping its real length.
    elbow, wrist = real[14, :2], real[16, :2]
    length = np.hypot(*((wrist - elbow) * [aspect, 1.0]))
    upright = real.copy()
    upright[[16, 18, 20, 22], :2] = elbow + np.array([0.0, -length])
    waving, holding = GestureRecognizer(), GestureRecognizer()
    found_wave, found_still = set(), set()
    for i in range(60):
        t = i / 30
        lm = upright.copy()
        lm[[16, 18, 20, 22], :2] = _rotate_about(upright[[16, 18, 20, 22], :2], elbow,
                                                 0.6 * np.sin(2 * np.pi * 2.0 * t), aspect)
        found_wave |= set(waving.push(t, lm, aspect, None))
        found_still |= set(holding.push(t, upright, aspect, None))
    assert "wave" in found_wave
    assert "wave" not in found_still     # (his other arm, held out straight, may read as "point")


def test_cheer_on_real_landmarks_with_both_arms_raised(still_perception):
    """messi5's real body with both arms lifted above the head -> cheer; the real pose
    as photographed -> nothing."""
    cues = _still_cues(still_perception, "messi5.jpg")
    real = cues.pose.landmarks.copy()
    h, w = load_rgb("messi5.jpg").shape[:2]
    aspect = w / h
    raised = real.copy()
    for shoulder, arm in ((11, [13, 15, 17, 19, 21]), (12, [14, 16, 18, 20, 22])):
        # Swing each whole arm about its shoulder until the wrist is straight above it.
        v = (real[arm[1], :2] - real[shoulder, :2]) * [aspect, 1.0]
        angle = np.arctan2(v[0], v[1])
        target = np.pi - 0.2 if shoulder == 11 else -(np.pi - 0.2)
        raised[arm, :2] = _rotate_about(real[arm, :2], real[shoulder, :2], angle - target, aspect)
    cheer, plain = GestureRecognizer(), GestureRecognizer()
    seen_cheer, seen_plain = set(), set()
    for i in range(30):
        seen_cheer |= set(cheer.push(i / 30, raised, aspect, None))
        seen_plain |= set(plain.push(i / 30, real, aspect, None))
    assert seen_cheer == {"cheer"}
    assert "cheer" not in seen_plain


def _clip_cues(name: str, seconds: float):
    with Perception(static=False, sync=True) as p:
        out = []
        for item in iter_media(path(name), start_ns=int(1e9)):
            if isinstance(item, AudioChunk):
                p.process_audio(item)
                continue
            if item.t_capture_ns > 1e9 + seconds * 1e9:
                break
            out.append(p.process_video(item))
        return out


@pytest.fixture(scope="module")
def talking_clip_cues():
    return _clip_cues("astronaut_talk.mp4", 2.5)


def test_real_talking_clip_conditioning_stream(talking_clip_cues):
    """astronaut_talk.mp4: a real smiling face swaying while speech plays. The stream runs at a
    fixed 30 Hz, tracks an upright body, lip-syncs, reads happy and triggers nothing."""
    cues = talking_clip_cues
    conds = list(conditioning_over(cues, rate_hz=30.0))
    assert len(conds) == pytest.approx(2.5 * 30, abs=2)
    ticks = np.diff([c.t_tick_ns for c in conds])
    assert np.all(ticks == ticks[0])
    late = conds[len(conds) // 2:]
    assert min(c.body_present for c in late) == 1.0
    assert max(abs(abs(c.bone_angles[B["spine"]]) - np.pi) for c in late) < 0.25
    assert max(c.speaking for c in conds) > 0.5
    closed = np.array([c.visemes[0] for c in conds])
    assert closed.min() < 0.5 and closed.max() > 0.9          # lip sync opens and closes
    assert EMOTIONS[int(np.argmax(late[-1].emotion))] == "happy"
    assert all(c.action == "none" for c in conds)


def test_camera_sway_and_talking_are_not_gestures(talking_clip_cues):
    """Real clips where nobody gestures: a swaying, zooming camera on a talking face and on a
    full body. Nothing may be recognised (a false nod or wave would fire its trigger live)."""
    for cues in (talking_clip_cues, _clip_cues("messi_sway.mp4", 3.0)):
        rec = GestureRecognizer()
        found = []
        for c in cues:
            w, h = c.image_size
            found += rec.push(c.t_capture_ns / 1e9, c.pose.landmarks if c.pose.present else None,
                              w / h, c.expression if c.expression_present else None)
        assert found == []
        assert sum(c.pose.present for c in cues) > 0.9 * len(cues)    # the body was tracked


def test_perceive_command_prints_the_conditioning_stream():
    r = subprocess.run([sys.executable, "-m", "liveavatar.cli", "perceive", str(path("grace_nod.mp4")),
                        "--conditioning", "--max-frames", "45"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 45
    last = lines[-1]
    assert set(last["bones"]) == set(BONE_INDEX) and set(last["emotion"]) == set(EMOTIONS)
    # Live-mode perception may skip frames on a busy machine, so presence is checked loosely.
    assert last["body_present"] > 0.5 and last["emotion"]["neutral"] > 0.8
    # A whole-image bob (camera motion) is not a nod: no action is triggered.
    assert all(x["action"] == "none" for x in lines)


def test_bad_mapping_file_is_a_one_line_cli_error(tmp_path):
    bad = tmp_path / "mapping.toml"
    bad.write_text('[keywords]\ndance = { action = "dnce" }\n')
    r = subprocess.run([sys.executable, "-m", "liveavatar.cli", "perceive", str(path("grace_nod.mp4")),
                        "--conditioning", "--mapping", str(bad), "--max-frames", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: keywords.dance.action: unknown action 'dnce' (known: " \
        "dance, bow, jump, wave, clap, cheer, spin, nod, head_shake, point)"


def _speech_cues(name, keywords: list[str]) -> list[Cues]:
    """Real speech through the real voice pipeline (VAD, pitch, visemes, pocketsphinx keyword
    spotting), fed in 20 ms chunks between 30 fps frames as a live stream would be. `name`: a
    gathered test file, or a Path."""
    from tests.media import read_wav
    samples, rate = read_wav(name if not isinstance(name, str) else path(name))
    hop = rate // 50
    blank = np.zeros((48, 64, 3), np.uint8)     # no camera: this test is about the voice
    out = []
    with Perception(static=False, sync=True, pose=False, face=False, hands=False,
                    keywords=keywords) as p:
        n_frames = int(len(samples) / rate * 30) + 10
        done = 0
        for f in range(n_frames):
            t_ns = int(1e9 + f * 1e9 / 30)
            while done < len(samples) and 1e9 + done / rate * 1e9 <= t_ns:
                p.process_audio(AudioChunk(samples[done:done + hop], rate, done // hop,
                                           int(1e9 + done / rate * 1e9)))
                done += hop
            if f == n_frames - 5:
                p.flush_audio()      # decode the last utterance
            out.append(p.process_video(CapturedFrame(blank, f, t_ns)))
    return out


@pytest.mark.parametrize("clip, expected, absent", [
    ("speech_dance.wav", "dance", "jump"),     # "hello everyone, let's dance now"
    ("howdy everyone, thank you for watching", "wave", "dance"),
])
def test_spoken_keywords_trigger_mapped_actions(default_mapping, clip, expected, absent, tmp_path):
    from tests.media import speak
    if not clip.endswith(".wav"):
        clip = speak(clip, tmp_path / "speech.wav", pad_s=1.0)
    cues = _speech_cues(clip, default_mapping.keyword_words())
    out = list(conditioning_over(cues, default_mapping))
    actions = [c.action for c in out]
    assert expected in actions and absent not in actions
    first = actions.index(expected)
    # The character was talking (lip sync) before the keyword arrived at the utterance's end.
    assert max(c.speaking for c in out[:first]) > 0.8
    assert min(c.visemes[0] for c in out[:first]) < 0.5
    if expected == "wave":       # "howdy" also makes the character happy
        assert max(c.emotion[EMOTIONS.index("happy")] for c in out[first:]) > 0.5


def test_hello_said_in_passing_fires_nothing(default_mapping):
    """A streamer says "hello" all the time: the default keywords leave it alone."""
    assert "hello" not in default_mapping.keyword_words()
    out = list(conditioning_over(_speech_cues("speech_hello.wav", default_mapping.keyword_words()),
                                 default_mapping))
    assert {c.action for c in out} == {"none"}
    assert max(c.emotion[EMOTIONS.index("happy")] for c in out) < 0.3


def test_a_keyword_in_passing_does_not_undo_a_held_emotion_hotkey(default_mapping, tmp_path):
    """The streamer holds "angry" (F2, hold) and then says "howdy ...": the real keyword
    spotter hears it and the character waves, but stays angry for the hold."""
    from liveavatar.clock import VirtualClock
    from liveavatar.conditioning import Conditioner
    from liveavatar.types import ControlEvent, ControlKind, EventSource, TriggerMode
    from tests.media import speak

    cues = _speech_cues(speak("howdy everyone, thank you for watching", tmp_path / "g.wav", pad_s=0.5),
                        default_mapping.keyword_words())
    assert any(k.word == "howdy" for c in cues for k in c.keywords)
    clock = VirtualClock(0)
    cond = Conditioner(default_mapping, rate_hz=30.0, clock=clock)
    t0 = cues[0].t_capture_ns
    cond.push_event(ControlEvent(ControlKind.EMOTION, "angry", EventSource.HOTKEY, TriggerMode.HOLD,
                                 hold_s=30.0, t_ns=t0))
    angry, happy, actions = [], [], set()
    for c in cues:
        clock.sleep_until(c.t_capture_ns)
        cond.push_cues(c)
        out = cond.tick(c.t_capture_ns)
        angry.append(out.emotion[EMOTIONS.index("angry")])
        happy.append(out.emotion[EMOTIONS.index("happy")])
        actions.add(out.action)
    assert "wave" in actions, "the keyword's action still plays"
    assert min(angry[15:]) > 0.8 and max(happy) < 0.1, "the held hotkey emotion stays on top"
