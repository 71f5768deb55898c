"""A fresh user data folder for imported characters, for tests that run a service."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def user_data(folder: Path) -> Iterator[Path]:
    old = os.environ.get("LIVEAVATAR_DATA_DIR")
    os.environ["LIVEAVATAR_DATA_DIR"] = str(folder)
    try:
        yield folder / "characters"
    finally:
        if old is None:
            os.environ.pop("LIVEAVATAR_DATA_DIR", None)
        else:
            os.environ["LIVEAVATAR_DATA_DIR"] = old
