"""SanityGate under real 2-process CPU DDP (gloo): one rank's failure stops both, no rank left waiting.

Each run is a separate Python process (tests/helpers_gate_ddp.py) with a hard timeout, so that a
hang fails the test instead of blocking the suite. The custom check fails on rank 1 only, from
epoch 2 on; rank 0's checks all pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "helpers_gate_ddp.py")
TIMEOUT_S = 300


def run_ddp(tmp_path, action: str, strategy: str = "ddp"):  # type: ignore[no-untyped-def]
    out = str(tmp_path)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [sys.executable, SCRIPT, out, action, strategy],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=os.path.dirname(HERE),
    )
    records = {}
    for rank in (0, 1):
        path = os.path.join(out, f"rank{rank}.json")
        assert os.path.exists(path), f"rank {rank} wrote nothing; rc={proc.returncode}\n{proc.stderr[-3000:]}"
        with open(path) as f:
            records[rank] = json.load(f)
    return proc, records


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_one_failing_rank_stops_both_at_the_same_epoch(tmp_path, strategy) -> None:  # type: ignore[no-untyped-def]
    proc, rec = run_ddp(tmp_path, "stop", strategy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        r = rec[rank]
        assert r["world_size"] == 2
        assert r["stopped_epoch"] == 2 and r["current_epoch"] == 3, r  # max_epochs=6: stopped early
        assert r["reason"] == "checks_failed"
        assert r["passed"] == [True, True, False]  # the same decisions on both ranks
    # rank 1 names its own failure, rank 0 (which passed) names rank 1's value
    assert "rank_check = 1 > max 0.5" in rec[1]["message"]
    assert "rank_check = 1 on rank 1" in rec[0]["message"]
    # the report is written once (rank 0) and holds every rank's values
    with open(os.path.join(str(tmp_path), "xai_gate_report.json")) as f:
        report = json.load(f)
    assert [e["epoch"] for e in report] == [0, 1, 2]
    rank_check = report[2]["checks"][0]
    assert rank_check["name"] == "rank_check"
    assert [p["value"] for p in rank_check["per_rank"]] == [0.0, 1.0]
    assert [p["passed"] for p in rank_check["per_rank"]] == [True, False]
    assert report[2]["passed"] is False and report[2]["decision"] == "stop"


def test_action_raise_raises_on_every_rank(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc, rec = run_ddp(tmp_path, "raise", "ddp")
    assert proc.returncode != 0
    for rank in (0, 1):
        assert rec[rank]["exception"] == "SanityCheckError", rec[rank]
        assert rec[rank]["current_epoch"] == 2 and rec[rank]["stopped_epoch"] == 2
    assert "SanityCheckError" in proc.stderr
