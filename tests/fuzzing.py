"""Hypothesis budgets. CI runs the `ci` profile (tests/conftest.py: derandomized, reproducible);
HYPOTHESIS_PROFILE=explore multiplies every test's example count for a longer hunt by hand."""
from __future__ import annotations

import os

EXPLORE_FACTOR = 10


def examples(n: int) -> int:
    """`n` examples in CI, EXPLORE_FACTOR times as many when exploring."""
    return n * EXPLORE_FACTOR if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else n
