#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the demo and the tests need.
# Installs the CPU build of torch first, so no CUDA packages are pulled on a CPU machine.
# Re-running is cheap: steps already done are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet --upgrade pip
    "$VPY" -m pip install --quiet "$TORCH_SPEC"
fi
stamp=.venv/.lightning_xai-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VPY" -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi
