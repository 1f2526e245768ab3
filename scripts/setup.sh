#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the demo and the tests need.
# Installs torch first (TORCH_SPEC), from TORCH_INDEX_URL when set (https://download.pytorch.org/whl/cpu:
# the CPU build, no CUDA packages), then this package with its test extras.
# Re-running is cheap: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# TORCH_INDEX_URL: where torch comes from, e.g. https://download.pytorch.org/whl/cpu for the CPU build
# (on Linux, PyPI's own torch wheels are the CUDA build); unset: pip's configured index
TORCH_INDEX=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    TORCH_INDEX=(--index-url "$TORCH_INDEX_URL")
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet --upgrade pip
    "$VPY" -m pip install --quiet ${TORCH_INDEX[@]+"${TORCH_INDEX[@]}"} "$TORCH_SPEC"
fi
stamp=.venv/.lightning_xai-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VPY" -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
# Optional: Debian's headless Chromium for the browser test (tests/test_tensorboard_server.py), which
# is skipped without it. Installed only in CI (CI or LIGHTNING_XAI_INSTALL_CHROMIUM=1), as root, with
# apt-get present; any failure here is reported and ignored, so set-up never fails because of it.
if [ -n "${CI:-}${LIGHTNING_XAI_INSTALL_CHROMIUM:-}" ] && [ "${LIGHTNING_XAI_INSTALL_CHROMIUM:-1}" != "0" ] \
    && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    if ! (export DEBIAN_FRONTEND=noninteractive
          timeout 300 apt-get update -qq >/dev/null 2>&1 \
          && timeout 600 apt-get install -y -qq chromium >/dev/null 2>&1); then
        echo "setup: could not install chromium with apt-get; the headless-browser test will be skipped" >&2
    fi
fi
