"""Character names and PSD layer names from any text: a name is a safe folder name or a one-line
refusal; a layer name maps to a known part or to none."""
from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from liveavatar.authoring.importer import check_new_name
from liveavatar.authoring.psd import part_of
from liveavatar.errors import UserError
from liveavatar.generation.mesh import pack

NASTY = st.one_of(st.text(max_size=80), st.sampled_from(["..", ".", "../x", "a/../../b", "/etc", "nul", "a\x00b",
                                                         "mia\n", " mia", "MIA", "mia.", "mia/"]))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(NASTY)
def test_any_name_is_safe_or_refused_in_one_line(name: str) -> None:
    root = Path("/tmp/liveavatar-names-root")
    try:
        check_new_name(name, root)
    except UserError as e:
        assert "\n" not in str(e) and "\r" not in str(e)
        return
    target = (root / name).resolve()
    assert target.parent == root.resolve() and target.name == name
    assert pack.NAME_RE.match(name)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_layer_name_maps_to_a_part_or_none(name: str) -> None:
    part = part_of(name)
    assert part is None or part in pack.PARTS
