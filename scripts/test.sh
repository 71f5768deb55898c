#!/usr/bin/env bash
# Set up everything the tests need (Debian packages when root, venv, test media), then run the
# whole suite. This is the README's test command and what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest -ra "$@"
