"""One batched render call for sessions showing different characters: the shared dispatch of the
built-in generators (rig2d, mesh)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from liveavatar.errors import UserError
from liveavatar.types import Conditioning

log = logging.getLogger(__name__)
C = TypeVar("C")


def render_by_character(gen_name: str, size: int, conds: Sequence[Conditioning], characters: Sequence[str],
                        prepared: Callable[[], Mapping[str, C]], prepare: Callable[[str], None],
                        render_group: Callable[[C, Sequence[Conditioning]], np.ndarray],
                        lock: threading.Lock) -> np.ndarray:
    """(B, size, size, 4) uint8: one batched `render_group` pass per character, rows in the
    callers' order. An unprepared character is prepared first (and warned about); `prepared`
    returns the generator's current table (preparing may replace it: copy-on-write, so renders in
    flight keep theirs). A fresh array per call: callers may keep frames (slots, encoders) while
    the generator renders on."""
    n = len(conds)
    if n != len(characters):
        raise UserError(f"{gen_name}.render: {n} conditionings but {len(characters)} character names")
    if n == 0:
        return np.zeros((0, size, size, 4), np.uint8)
    for name in set(characters):
        if name not in prepared():
            log.warning("%s: character %r was not prepared; loading it now", gen_name, name)
            prepare(name)
    chars = prepared()
    with lock:
        if all(c == characters[0] for c in characters):
            return render_group(chars[characters[0]], conds)
        out = np.empty((n, size, size, 4), np.uint8)
        for name in dict.fromkeys(characters):
            idx = [i for i, c in enumerate(characters) if c == name]
            out[idx] = render_group(chars[name], [conds[i] for i in idx])
        return out
