"""Mapping files and character manifests under hypothesis: the shipped files, damaged at random
(values of the wrong type or range, NaN and infinities, missing and unknown keys, broken syntax).
Loading either works, and then the result is usable, or fails with ONE line that names the file
(and, for values, the key); never another exception."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.conditioning import Conditioner, load_mapping
from liveavatar.conditioning.mapping import DEFAULT_MAPPING_PATH
from liveavatar.errors import UserError
from liveavatar.generation.characters import characters_dir, load_pack
from liveavatar.types import ControlEvent, ControlKind, EventSource
from tests.fuzzing import examples

EXAMPLES = examples(60)
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

names_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
scalars = st.one_of(
    st.booleans(), st.integers(-10**6, 10**6), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 0.0, -0.0, 1e-300, 1e300, "", "neutral", "happy", "dance", "hold", "toggle",
                     "momentary", "../../etc/passwd", "face", "voice", "trigger"]),
    names_text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                        st.dictionaries(names_text.filter(bool), inner, max_size=3)),
                      max_leaves=8)


def one_line_naming(err: UserError, *names: str) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    assert any(n in msg for n in names), f"{msg!r} names none of {names}"


# ---------------------------------------------------------------------------------------------
# Mapping files (TOML)
# ---------------------------------------------------------------------------------------------

DEFAULT_MAPPING = tomllib.loads(DEFAULT_MAPPING_PATH.read_text())


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        # JSON escapes are TOML basic-string escapes, except that TOML also forbids a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict) -> str:
    lines = []
    for section, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{json.dumps(section, ensure_ascii=False)}]")
            lines += [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{json.dumps(section, ensure_ascii=False)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


@st.composite
def damaged_mapping(draw) -> str:
    doc: dict = {}
    sections = draw(st.lists(st.sampled_from(sorted(DEFAULT_MAPPING)), unique=True, max_size=4))
    for sec in sections:
        body = DEFAULT_MAPPING[sec]
        if not isinstance(body, dict) or not body:
            doc[sec] = draw(values)
            continue
        keys = draw(st.lists(st.sampled_from(sorted(body)), unique=True, min_size=1, max_size=4))
        doc[sec] = {k: draw(st.one_of(st.just(body[k]), values)) for k in keys}
        if draw(st.booleans()):
            doc[sec][draw(names_text.filter(bool))] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(names_text.filter(bool))] = {"x": draw(values)}
    text = to_toml(doc)
    if draw(st.integers(0, 7)) == 0:   # and now and then, broken syntax
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["=", "[", "\"", "]]", "\x00", "= =", "\n[emotion"])) + text[cut:]
    return text


@FUZZ
@given(text=damaged_mapping())
def test_damaged_mapping_loads_or_names_file_and_key(tmp_path, text):
    path = tmp_path / "my_mapping.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        mapping = load_mapping(path)
    except UserError as e:
        one_line_naming(e, str(path))
        return
    # Accepted: the conditioner must run on it and give finite, in-range conditioning.
    cond_maker = Conditioner(mapping, rate_hz=30.0)
    names = list(cond_maker.emotions)
    cond_maker.push_event(ControlEvent(ControlKind.EMOTION, names[-1], EventSource.API))
    for hk in list(getattr(mapping, "hotkeys", {}) or {})[:2]:
        for ev in cond_maker.hotkey_events(hk):
            cond_maker.push_event(ev)
    for i in range(1, 31):
        c = cond_maker.tick(i * 33_333_333)
        for arr in (c.bone_angles, c.root, c.head, c.face, c.visemes, c.emotion):
            assert np.isfinite(arr).all()
        assert abs(float(c.emotion.sum()) - 1.0) < 1e-3 and 0.0 <= c.emotion_intensity <= 1.0


@pytest.mark.parametrize("content,needle", [("", None), ("[emotion]\nnames = []\n", "emotion.names"),
                                            ("[tracking]\nmirror = \"perhaps\"\n", "tracking.mirror"),
                                            ("[tracking\n", "invalid TOML"), ("\xff", None)])
def test_known_bad_mappings(tmp_path, content, needle):
    path = tmp_path / "m.toml"
    path.write_bytes(content.encode("latin-1"))
    try:
        load_mapping(path)
    except UserError as e:
        one_line_naming(e, str(path))
        if needle:
            assert needle in str(e)
        return
    assert content == "", "only an empty file (all defaults) should load"


def test_missing_and_directory_mapping_paths(tmp_path):
    for p in (tmp_path / "nope.toml", tmp_path):
        with pytest.raises(UserError) as e:
            load_mapping(p)
        one_line_naming(e.value, str(p))


# ---------------------------------------------------------------------------------------------
# Character manifests (JSON)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pack_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("characters")
    shutil.copytree(characters_dir() / "nova", root / "nova")
    return root


NOVA = json.loads((characters_dir() / "nova" / "manifest.json").read_text())


def leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from leaf_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from leaf_paths(v, prefix + (i,))


PATHS = list(leaf_paths(NOVA))


@st.composite
def damaged_manifest(draw) -> str:
    doc = json.loads(json.dumps(NOVA))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(values)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue   # an earlier edit removed or retyped this path
    text = json.dumps(doc, allow_nan=True)
    if draw(st.integers(0, 7)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["{", "]", ",", "\"", "NaN", ""])) + text[cut + 1:]
    return text


@FUZZ
@given(text=damaged_manifest())
def test_damaged_manifest_loads_or_names_the_file(pack_root, text):
    manifest = pack_root / "nova" / "manifest.json"
    manifest.write_text(text)
    try:
        pack = load_pack("nova", root=pack_root)
    except UserError as e:
        one_line_naming(e, str(pack_root / "nova"))
        return
    # Accepted: the pack is complete (every emotion has every mouth shape) and finite.
    from liveavatar.types import EMOTIONS, VISEMES
    assert set(EMOTIONS) <= set(pack.expressions)
    for expr in pack.expressions.values():
        assert set(VISEMES) <= set(expr.mouth)
    assert np.isfinite(pack.head).all()


def test_manifest_survives_the_fuzzing_intact(pack_root):
    """The shipped manifest itself still loads (the fuzz edits only a private copy)."""
    assert load_pack("nova").name == "nova"


@pytest.mark.parametrize("key", ["bad\nkey", "bad\r\nkey", "bad\u2028key", "\x85\x0bx"])
def test_manifest_key_with_a_line_break_gives_one_line(pack_root, key):
    """Found on a fresh machine: a manifest key holding a newline gave a two-line error."""
    doc = json.loads(json.dumps(NOVA))
    doc[key] = 1
    doc["rig"][key] = 1
    manifest = pack_root / "nova" / "manifest.json"
    try:
        manifest.write_text(json.dumps(doc))
        with pytest.raises(UserError) as e:
            load_pack("nova", root=pack_root)
        one_line_naming(e.value, str(pack_root / "nova"))
        assert len(str(e.value).splitlines()) == 1
    finally:
        manifest.write_text(json.dumps(NOVA))


@pytest.mark.parametrize("key", ["sm\nile", "x\u2029y"])
def test_mapping_key_with_a_line_break_gives_one_line(tmp_path, key):
    path = tmp_path / "m.toml"
    path.write_text(f"[emotion]\n{json.dumps(key)} = 1\n[{json.dumps(key)}]\nx = 1\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_mapping(path)
    one_line_naming(e.value, str(path))
    assert len(str(e.value).splitlines()) == 1
