#!/usr/bin/env bash
# Set up (if needed), type-check the package (mypy) and run the whole test suite (unit tests, doctests,
# Trainer/TensorBoard/DDP tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the package's types first (settings in pyproject.toml, [tool.mypy]); a type error fails the run
.venv/bin/python -m mypy lightning_xai
# two worker processes (pytest-xdist); PYTEST_WORKERS=0 runs everything in this process
exec .venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" "$@"
