#!/usr/bin/env bash
# Set up everything the tests need (Debian packages when root, venv, test media), run the static
# checks (ruff, mypy, import-linter: any finding fails the run), then the tests: the fast lane
# first (no browser, no OBS, nothing slow), then the rest. This is the README's test command and
# what CI (.ci/run) runs. Arguments go to pytest instead of the two lanes (e.g. tests/server -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
PY=.venv/bin/python
echo "== ruff"; $PY -m ruff check .
echo "== mypy"; $PY -m mypy
echo "== import-linter"; .venv/bin/lint-imports
if [ $# -gt 0 ]; then
    exec $PY -m pytest -ra "$@"
fi
FAST="not browser and not obs and not slow"
echo "== pytest: fast lane"; $PY -m pytest -ra -m "$FAST"
echo "== pytest: browser, OBS and slow tests"; exec $PY -m pytest -ra -m "not ($FAST)"
