#!/usr/bin/env bash
# Set up (if needed) and run the main job: the digits demo with AttributionMonitor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python example_trainers/digits.py "$@"
