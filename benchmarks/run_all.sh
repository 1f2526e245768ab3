#!/usr/bin/env bash
# Run the attribution benchmarks one after another and keep each one's table and JSON line.
#
#   bash benchmarks/run_all.sh                 # CPU (1 thread, process CPU time), about 15 minutes on 2 cores
#   bash benchmarks/run_all.sh --device cuda   # a GPU (wall time after synchronize)
#   LOG=bench.log PYTHON=python3 bash benchmarks/run_all.sh --device cuda
#
# Extra arguments go to every benchmark. Each benchmark has its own time limit (BENCH_TIMEOUT seconds,
# default 150): one that runs out is reported and the rest still run. Output: the tables on the
# terminal, and everything (tables and JSON lines) in $LOG (default benchmarks.log).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${LOG:-benchmarks.log}
LIMIT=${BENCH_TIMEOUT:-150}
: >"$LOG"
run() {
    echo "== $*" | tee -a "$LOG"
    timeout "$LIMIT" "$PY" -W ignore "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "!! $1 ended with status $rc (124: over ${LIMIT}s)" | tee -a "$LOG"
}
run benchmarks/attribution_cost.py "$@"
run benchmarks/token_cost.py "$@"
run benchmarks/shared_pass.py "$@"
run benchmarks/perturbation_cost.py "$@"
run benchmarks/memory.py "$@"
run benchmarks/precision.py "$@"
echo "log: $LOG"
