#!/usr/bin/env bash
# Build the wheel, install it in a clean virtual environment (not the editable install of .venv) and
# run README.md's examples there, from a directory outside the checkout, so that the installed
# package is what they import. Called by .ci/run after the test suite.
# torch is installed first as scripts/setup.sh does (TORCH_SPEC, TORCH_INDEX_URL); pip's cache makes
# that cheap after set-up. The environment lives in a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    TORCH_INDEX=(--index-url "$TORCH_INDEX_URL")
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lightning_xai-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "check_wheel: a clean environment with $TORCH_SPEC"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet ${TORCH_INDEX[@]+"${TORCH_INDEX[@]}"} "$TORCH_SPEC"

echo "check_wheel: building the wheel"
# the build runs in its own isolated environment (setuptools>=77 from pyproject's build-system);
# its log is kept and must not mention a deprecation
if ! "$VPY" -m pip wheel --no-deps -w "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    echo "check_wheel: the wheel did not build" >&2
    exit 1
fi
if grep -i "deprecat" "$WORK/build.log" >&2; then
    echo "check_wheel: the wheel's build printed a deprecation (above)" >&2
    exit 1
fi
WHEELS=("$WORK"/dist/lightning_xai-*.whl)
if [ "${#WHEELS[@]}" -ne 1 ] || [ ! -f "${WHEELS[0]}" ]; then
    echo "check_wheel: expected one wheel in $WORK/dist" >&2
    exit 1
fi
WHEEL="${WHEELS[0]}"
echo "check_wheel: installing $(basename "$WHEEL") and pytest"
"$VPY" -m pip install --quiet "$WHEEL" pytest

# README.md alone in an empty directory: nothing of the checkout is importable from there
RUN="$WORK/readme"
mkdir "$RUN"
cp README.md "$RUN/"
cd "$RUN"
"$VPY" - "$WORK/venv" <<'EOF'
import os
import sys

import lightning_xai

venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(lightning_xai.__file__)
assert where.startswith(venv + os.sep), f"lightning_xai imported from {where}, not from the clean environment {venv}"
print(f"check_wheel: lightning_xai {lightning_xai.__version__} imported from {os.path.dirname(where)}")
EOF
echo "check_wheel: README.md's examples against the installed wheel"
"$VPY" -m pytest -q -p no:cacheprovider --doctest-glob=README.md \
    -o doctest_optionflags="ELLIPSIS NORMALIZE_WHITESPACE" README.md
echo "check_wheel: passed"
