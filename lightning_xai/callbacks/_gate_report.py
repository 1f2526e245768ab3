"""What ``SanityGate`` says about an epoch: the failure message, the terminal line, the JSON report's
entry and its markdown for TensorBoard's Text tab. Pure functions of the results; no Lightning."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from .. import checks as C
from ..sink import markdown_table
from ._terminal import result_text

__all__ = ["failures", "failure_message", "epoch_line", "report_entry", "markdown"]


def _other_ranks(rank: int, results: Sequence[C.CheckResult], per_rank: torch.Tensor) -> List[str]:
    """The values of the checks that failed on the ranks other than ``rank``."""
    return [
        f"{r.name} = {float(per_rank[other, i, 0]):.4g} on rank {other}"
        for other in range(per_rank.shape[0]) if other != rank
        for i, r in enumerate(results) if not bool(per_rank[other, i, 1])
    ]


def failures(rank: int, results: Sequence[C.CheckResult], per_rank: torch.Tensor) -> List[str]:
    """This rank's failure reasons, then the values of checks that failed on the other ranks."""
    return [r.reason for r in results if not r.passed] + _other_ranks(rank, results, per_rank)


def failure_message(
    rank: int, epoch: int, results: Sequence[C.CheckResult], per_rank: torch.Tensor, in_warmup: bool,
    wait_count: int, patience: int,
) -> str:
    """The gate's message for a failed epoch: how many checks failed, the count in a row, every reason."""
    names = sorted({r.name for i, r in enumerate(results) if not bool(per_rank[:, i, 1].all())})
    state = "warm-up, not counted" if in_warmup else f"{wait_count} failed validation check(s) in a row, patience {patience}"
    return (
        f"SanityGate: epoch {epoch}: {len(names)} of {len(results)} explanation check(s) failed "
        f"({state}): " + "; ".join(failures(rank, results, per_rank))
    )


def epoch_line(
    rank: int, epoch: int, results: Sequence[C.CheckResult], per_rank: torch.Tensor, decision: str,
    wait_count: int, patience: int,
) -> str:
    """The epoch in one line: ``xai epoch 3: gate FAILED: relevance_mass/saliency = 0.31 < min 0.5``.

    Example:
        >>> r = C.CheckResult("finite", 0.0, True, "finite")
        >>> epoch_line(0, 3, [r], torch.tensor([[[0.0, 1.0]]]), "pass", 0, 0)
        'xai epoch 3: gate passed (1 check)'
    """
    evaluated = sum(1 for r in results if not r.skipped)
    skipped = len(results) - evaluated
    counted = f"{evaluated} check{'s' if evaluated != 1 else ''}" + (f", {skipped} skipped" if skipped else "")
    if decision == "pass":
        return f"xai epoch {epoch}: gate passed ({counted})"
    lines = [result_text(r.name, r.value, r.bound, r.direction, r.reason) for r in results if not r.passed]
    lines += _other_ranks(rank, results, per_rank)
    state = {
        "warmup": " (warm-up, not counted)",
        "fail": f" ({wait_count} in a row, patience {patience})",
        "stop": ", stopping training",
        "raise": ", raising SanityCheckError",
        "warn": " (action='warn': training goes on)",
    }.get(decision, "")
    return f"xai epoch {epoch}: gate FAILED{state}: " + "; ".join(lines)


def report_entry(
    epoch: int, global_step: int, failed: bool, in_warmup: bool, wait_count: int, patience: int, decision: str,
    results: Sequence[C.CheckResult], per_rank: torch.Tensor,
) -> Dict[str, Any]:
    """One epoch of the JSON report: the verdict and every check's result (each rank's under DDP)."""
    entries = []
    for i, r in enumerate(results):
        entry = r.to_dict()
        if per_rank.shape[0] > 1:
            entry["per_rank"] = [
                {"value": C.json_number(float(per_rank[k, i, 0])), "passed": bool(per_rank[k, i, 1])}
                for k in range(per_rank.shape[0])
            ]
        entries.append(entry)
    return {
        "epoch": epoch,
        "global_step": global_step,
        "passed": not failed,
        "warmup": in_warmup,
        "fails_in_a_row": wait_count,
        "patience": patience,
        "decision": decision,
        "checks": entries,
    }


def markdown(entry: Mapping[str, Any], message: Optional[str]) -> str:
    """One epoch of the report as markdown for TensorBoard's Text tab."""
    verdict = "**passed**" if entry["passed"] else f"**failed** ({entry['decision']})"
    head = (
        f"Epoch {entry['epoch']} (step {entry['global_step']}): {verdict}; "
        f"fails in a row {entry['fails_in_a_row']} (patience {entry['patience']})"
    )
    rows = {
        c["name"]: {
            "value": "NaN" if c.get("value") is None else c["value"],
            "passed": ("not yet applicable" if c.get("details", {}).get("not_applicable") else "skipped")
            if c.get("skipped") else ("yes" if c["passed"] else "**no**"),
            "reason": c.get("reason", ""),
        }
        for c in entry["checks"]
    }
    text = head + "\n\n" + markdown_table(rows, row_header="check")
    return text + (f"\n\n{message}" if message else "")
