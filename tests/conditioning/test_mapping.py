"""The mapping file: defaults, merging, and one-line errors that name the file and the key."""
from __future__ import annotations

import pytest

from liveavatar.conditioning import load_mapping
from liveavatar.errors import ConfigError
from liveavatar.types import ACTIONS, EMOTIONS, TriggerMode


def test_bundled_default_is_valid_and_covers_every_action_and_emotion():
    m = load_mapping()
    assert m.path is None
    assert m.emotion.names == EMOTIONS
    assert set(m.actions) == set(ACTIONS) - {"none"}
    assert m.keywords["dance"].action == "dance" and m.keywords["dance"].mode is TriggerMode.HOLD
    assert m.hotkeys["F2"].emotion == "angry" and m.hotkeys["F2"].hold_s == 3.0
    assert m.tracking.mirror is True
    assert "dance" in m.keyword_words()


def test_user_file_merges_over_defaults(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[tracking]\nmirror = false\n\n[keywords]\nparty = { action = "dance", mode = "toggle" }\n'
                 '\n[emotion]\nnames = ["neutral", "happy", "sad", "angry", "surprised", "excited", "shy", "smug"]\n')
    m = load_mapping(f)
    assert m.path == f
    assert m.tracking.mirror is False
    assert m.tracking.min_visibility == load_mapping().tracking.min_visibility   # merged
    assert list(m.keywords) == ["party"]                                          # replaced
    assert m.emotion.names[-1] == "smug"
    assert m.hotkeys["F1"].emotion == "happy"


@pytest.mark.parametrize("text, expected", [
    ('[keywords]\ndance = { action = "dnce" }\n', "keywords.dance.action: unknown action 'dnce'"),
    ('[hotkeys]\nF9 = { emotion = "angy" }\n', "hotkeys.F9.emotion: unknown emotion 'angy'"),
    ('[emotion]\nblend_s = "fast"\n', "emotion.blend_s: "),
    ('[emotion]\nblend_s = -1\n', "emotion.blend_s: Input should be greater than 0"),
    ('[tracking]\nmirorr = true\n', "tracking.mirorr: unknown key"),
    ('[keywords]\nhi = { mode = "hold" }\n', "keywords.hi: needs an `emotion` or an `action`"),
    ('[keywords]\nhi = { emotion = "happy", mode = "forever" }\n', "keywords.hi.mode: "),
    ('[emotion]\nnames = ["happy", "neutral"]\n', "emotion.names: must start with"),
    ('[emotion]\npriority = ["face", "face", "voice"]\n', "emotion.priority: must list each of"),
    ('[actions.moonwalk]\nduration_s = 2\nblend_in_s = 0.1\nblend_out_s = 0.1\n', "actions: unknown action 'moonwalk'"),
    ('[gestures]\nwave = { action = "spinn" }\n', "gestures.wave.action: unknown action 'spinn'"),
    ('[gestures]\nsalute = { emotion = "happy" }\n', "gestures.salute: unknown key"),
    ('[hotkeys\nF9 = 1\n', "invalid TOML: "),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, expected):
    f = tmp_path / "mapping.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_mapping(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: "), msg
    assert expected in msg
    assert "\n" not in msg


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: mapping file not found$"):
        load_mapping(tmp_path / "nope.toml")
