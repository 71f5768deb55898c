#!/usr/bin/env bash
# One-shot set-up for a fresh Debian 12 / Python 3.10-3.12 machine: system packages (when root),
# a venv in .venv, the CPU torch wheel first, then the project. Safe to run again.
# Usage: scripts/setup.sh [--test]     (--test adds test tools and test media)
set -euo pipefail
cd "$(dirname "$0")/.."
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1
PY=${PYTHON:-python3}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs="ffmpeg espeak-ng sox alsa-utils"
    [ $WANT_TEST = 1 ] && pkgs="$pkgs chromium chromium-driver obs-studio xvfb xauth mesa-utils janus"
    # Node from another source (e.g. nodesource's nodejs, which bundles npm) conflicts with Debian's
    # npm package: ask Debian for node and npm only where there is no npm yet.
    [ $WANT_TEST = 1 ] && ! command -v npm >/dev/null && pkgs="$pkgs nodejs npm"
    missing=""
    for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
elif ! command -v ffmpeg >/dev/null; then
    echo "setup: not root; install ffmpeg espeak-ng sox (and chromium obs-studio xvfb janus for tests) yourself" >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU wheel first: a bare torch requirement with no torch installed pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" || pip install -q torch --index-url https://download.pytorch.org/whl/cpu
extra=""
[ $WANT_TEST = 1 ] && extra="[test,ray]"   # ray: tests/interop/test_ray_workers.py
pip install -q -c constraints.txt -e ".$extra"

if [ $WANT_TEST = 1 ]; then
    # pyvts (the independent VTube Studio client the interop tests use) requires opencv-python,
    # which would overwrite opencv-contrib-python's cv2: install it without its requirements.
    pip install -q --no-deps "pyvts==0.3.3" && pip install -q -c constraints.txt "aiofiles>=23"
    # An independent WHIP/WHEP browser client (medooze's whip.js / whep.js) for tests/interop.
    if command -v npm >/dev/null; then
        npm install --silent --no-audit --no-fund --prefix tests/interop/.npm "whip-whep@1.2.0" >/dev/null
    fi
    python -m tests.media.fetch
fi
