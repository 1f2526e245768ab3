"""``SanityGate``: stop (or fail) training when explanation sanity checks fail, like ``EarlyStopping``."""

from __future__ import annotations

import json
import math
import os
import re
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .. import checks as C
from .. import functional as F
from .._lightning import rank_zero_info, rank_zero_warn
from ..errors import SanityCheckError
from ..probe import ProbeSet, ProbeSpec
from ..sink import LogSink
from . import _gate_report as R
from ._base import TargetSpec, XAICallback
from ._terminal import progress_print

__all__ = ["SanityGate", "GateReason", "gate_decision"]

ACTIONS = ("stop", "raise", "warn")


class GateReason(Enum):
    """Why the gate acted (``SanityGate.stopping_reason``)."""

    NOT_STOPPED = "not_stopped"
    #: checks failed on more validation checks in a row than ``patience`` allows
    CHECKS_FAILED = "checks_failed"
    #: as CHECKS_FAILED, and a failed check's value was NaN (the explanation could not be computed)
    NON_FINITE = "non_finite"
    #: as CHECKS_FAILED, and a check raised an exception (its reason names it)
    CHECK_ERROR = "check_error"


def gate_decision(failed: bool, wait_count: int, patience: int, in_warmup: bool) -> "tuple[int, bool]":
    """The gate's rule as a pure function: ``(new_wait_count, act)``.

    A failed validation check adds one to the count of failures in a row, a passed one resets it;
    the gate acts when the count exceeds ``patience``. During warm-up nothing counts.

    Example:
        >>> gate_decision(True, 0, 0, False), gate_decision(True, 0, 1, False), gate_decision(False, 3, 1, False)
        ((1, True), (1, False), (0, False))
    """
    if in_warmup:
        return wait_count, False
    wait_count = wait_count + 1 if failed else 0
    return wait_count, wait_count > patience


class SanityGate(XAICallback):
    """Stop (or fail) training when explanation sanity checks fail, with ``EarlyStopping``'s semantics.

    At the end of each validation epoch of ``fit`` (every ``every_n_epochs``; never in the sanity
    check or with ``fast_dev_run``) the gate evaluates its checks (:mod:`lightning_xai.checks`) on the
    probe, logs each value as ``xai/check/<name>`` and ``xai/gate/passed`` (1 when every check passed
    on every rank, else 0), and appends every check's result to a JSON report.
    A validation check *fails* when any check fails on any rank. When more than ``patience`` of them
    fail in a row (from epoch ``warmup_epochs`` on) the gate acts:

    - ``"stop"``: ``trainer.should_stop = True``; training ends after this epoch;
    - ``"raise"``: raises :class:`~lightning_xai.errors.SanityCheckError` (on every rank);
    - ``"warn"``: a warning, training goes on.

    ``stopping_reason`` (a :class:`GateReason`) and ``stopping_reason_message`` say why, naming the
    failed checks and their values.

    **DDP**: every rank evaluates the checks and the ranks agree through
    ``trainer.strategy.reduce_boolean_decision(failed, all=False)`` (the gate fails if any rank's
    checks fail), so every rank counts the same failures, stops at the same epoch and no rank is left
    waiting. Each rank's values are gathered into the report; loggers write once (rank 0).

    **Checkpoints**: the gate decides in ``on_validation_epoch_end``, before ``ModelCheckpoint``
    (which Lightning runs last) saves in ``on_validation_end``. To keep failing epochs out of "best",
    pass ``guard_metric="val/loss"``: the gate then logs ``xai/gate/val/loss``, equal to ``val/loss``
    when the gate passed and to ``inf`` (``guard_mode="max"``: ``-inf``) when it failed, and you
    monitor that: ``ModelCheckpoint(monitor="xai/gate/val/loss", mode="min")``.

    **Order**: checks that read monitor values (:class:`~lightning_xai.checks.DeadUnits`,
    :class:`~lightning_xai.checks.Drift`) need ``DeadReLUMonitor``/``FeatureDriftMonitor`` *before*
    the gate in ``callbacks``: checked at setup (after is an error).

    Args:
        probe: the :class:`~lightning_xai.ProbeSet` explained by the checks, or a
            :class:`~lightning_xai.ProbeSpec` drawn from the validation data at setup.
        checks: the checks to evaluate, e.g. ``[checks.RelevanceMass("saliency", min_mass=0.6)]``.
        action: ``"stop"``, ``"raise"`` or ``"warn"``.
        patience: failed validation checks in a row that are tolerated; the gate acts on the next
            (``patience=0``: on the first failure).
        warmup_epochs: epochs ``0 .. warmup_epochs - 1`` are evaluated and logged but never counted.
        every_n_epochs: evaluate every n-th validation epoch (patience counts evaluations).
        target: the class explained: ``"predicted"``, ``"true"``, an int or a callable.
        report_dir: where ``xai_gate_report.json`` goes (default: ``trainer.log_dir``).
        guard_metric, guard_mode: see *Checkpoints* above.
        chunk_size: rows per forward+backward pass for the attributions.
        verbose: log the gate's message (rank 0) when checks fail.
        dtype: precision of the attributions the checks use (``"float32"`` default; see
            :class:`~lightning_xai.callbacks.AttributionMonitor`).
        on_error: ``"raise"`` (default) or ``"warn"``: a failure of the gate itself (not of a check: a
            check that raises is a failed check, its reason naming the error, so every rank reaches a
            decision) warns and training goes on. A report file that cannot be written is always a
            warning that names the path and the fix, never a dead run.
        output: which of the model's outputs is explained when it returns a tuple, dict or object: an
            index, a key or attribute name, or ``fn(outputs) -> (N,) or (N, classes)``.
        embedding, pad_id: for token ids, the dotted name of the ``nn.Embedding`` they are attributed
            at (default: the one that reads them) and the padding id (the baseline).

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> from lightning_xai import ProbeSet, checks
        >>> from lightning_xai.callbacks import SanityGate
        >>> masks = torch.zeros(8, 8, 8); masks[:, 2:6, 2:6] = 1
        >>> probe = ProbeSet(torch.rand(8, 1, 8, 8), torch.arange(8) % 4, masks=masks)
        >>> gate = SanityGate(probe, [checks.RelevanceMass("saliency", min_mass=0.5), checks.Finite()],
        ...                   patience=1, warmup_epochs=2)
        >>> trainer = pl.Trainer(callbacks=[gate], logger=False, enable_progress_bar=False)
    """

    REPORT_NAME = "xai_gate_report.json"

    #: every check takes probes of several inputs, or says at setup why it cannot (see :mod:`lightning_xai.checks`)
    accepts_structured_probes = True

    def __init__(
        self,
        probe: Union[ProbeSet, ProbeSpec],
        checks: Sequence[C.Check],
        action: str = "stop",
        patience: int = 0,
        warmup_epochs: int = 0,
        every_n_epochs: int = 1,
        target: TargetSpec = "predicted",
        report_dir: Optional[str] = None,
        guard_metric: Optional[str] = None,
        guard_mode: str = "min",
        chunk_size: Optional[int] = None,
        verbose: bool = True,
        dtype: Union[str, torch.dtype] = "float32",
        on_error: str = "raise",
        output: F.OutputSpec = None,
        embedding: Optional[str] = None,
        pad_id: int = 0,
    ) -> None:
        super().__init__(
            probe, target=target, every_n_epochs=every_n_epochs, chunk_size=chunk_size, dtype=dtype, on_error=on_error,
            output=output, embedding=embedding, pad_id=pad_id,
        )
        self.checks: List[C.Check] = C.validate(checks)
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(map(repr, ACTIONS))}, got {action!r}")
        for arg, v in (("patience", patience), ("warmup_epochs", warmup_epochs)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{arg} must be an int >= 0, got {v!r}")
        if report_dir is not None and not isinstance(report_dir, (str, os.PathLike)):
            raise TypeError(f"report_dir must be a path or None, got {type(report_dir).__name__}")
        if guard_metric is not None and (not isinstance(guard_metric, str) or not guard_metric):
            raise ValueError(f"guard_metric must be the name of a logged metric such as 'val/loss', got {guard_metric!r}")
        if guard_mode not in ("min", "max"):
            raise ValueError(f"guard_mode must be 'min' or 'max' (as ModelCheckpoint's mode), got {guard_mode!r}")
        self.action = action
        self.patience = patience
        self.warmup_epochs = warmup_epochs
        self.report_dir = None if report_dir is None else os.fspath(report_dir)
        self.guard_metric = guard_metric
        self.guard_mode = guard_mode
        self.verbose = bool(verbose)
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = GateReason.NOT_STOPPED
        self.stopping_reason_message: Optional[str] = None
        self.last_passed = True
        #: one entry per evaluated epoch (what the JSON report holds)
        self.report: List[Dict[str, Any]] = []
        #: the last epoch's results on this rank
        self.last_results: List[C.CheckResult] = []
        self._report_path: Optional[str] = None

    dashboard_categories = ("Sanity checks",)

    def _state_key_fields(self) -> Dict[str, Any]:
        return {**super()._state_key_fields(), "checks": [c.name for c in self.checks]}

    def declared_metrics(self) -> Tuple[str, ...]:
        guard = () if self.guard_metric is None else (re.escape(f"xai/gate/{self.guard_metric}"),)
        return (r"xai/check/.+", r"xai/gate/passed") + guard

    def dashboard_charts(self) -> Dict[str, Dict[str, List[str]]]:
        """One chart per check: its value and its bound (``xai/check/<name>/bound``); the verdict; the guard."""
        charts = {f"{c.name}: value and bound": [rf"xai/check/{re.escape(c.name)}(/bound)?$"] for c in self.checks}
        charts["gate passed (1) / failed (0)"] = [r"xai/gate/passed"]
        if self.guard_metric is not None:
            charts[f"{self.guard_metric}, inf when the gate failed"] = [re.escape(f"xai/gate/{self.guard_metric}") + "$"]
        return {"Sanity checks": charts}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._report_path = None  # a gate reused in another fit writes into that run's directory
        super().setup(trainer, pl_module, stage)

    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        # the base's setup calls this once the probe is a ProbeSet: checks that need the probe (masks
        # for RelevanceMass, image inputs, ...) are validated then; a ProbeSpec drawn from loaders
        # passed to fit() is drawn, and these checks run, when the first validation epoch starts
        classes = self._check_against_model(pl_module)
        assert isinstance(self.probe, ProbeSet)
        info = C.CheckSetup(
            probe=self.probe, model=pl_module, classes=classes, callbacks=list(trainer.callbacks), gate=self
        )
        for check in self.checks:
            check.setup(info)

    def _should_evaluate(self, trainer: Any) -> bool:
        if trainer.fast_dev_run or trainer.state.fn != "fit":
            return False
        return self._should_run(trainer)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_evaluate(trainer):
            return
        results = self._evaluate(trainer, pl_module)
        local_failed = not all(r.passed for r in results)
        failed = trainer.strategy.reduce_boolean_decision(local_failed, all=False)
        per_rank = self._gather(trainer, results)
        epoch = int(trainer.current_epoch)
        in_warmup = epoch < self.warmup_epochs
        self.wait_count, act = gate_decision(failed, self.wait_count, self.patience, in_warmup)
        self.last_passed = not failed
        self.last_results = results

        scalars = {f"xai/check/{r.name}": r.value for r in results if not r.skipped}
        # each bound next to its value (one chart per check draws both)
        scalars.update({f"xai/check/{r.name}/bound": r.bound for r in results if not r.skipped and r.bound is not None})
        scalars["xai/gate/passed"] = 0.0 if failed else 1.0
        sink = self._sink(trainer)
        sink.scalars(scalars)

        rank = trainer.global_rank if per_rank.shape[0] > 1 else 0
        message = (
            R.failure_message(rank, epoch, results, per_rank, in_warmup, self.wait_count, self.patience) if failed else None
        )
        decision = "pass" if not failed else ("warmup" if in_warmup else (self.action if act else "fail"))
        self.report.append(R.report_entry(
            epoch, int(trainer.global_step), failed, in_warmup, self.wait_count, self.patience, decision, results, per_rank
        ))
        sink.text("xai/gate/report", R.markdown(self.report[-1], message))
        self._write_report(trainer, sink)  # last: a failure before it leaves the file as it was
        if self.verbose:
            # one line under the progress bar (rank 0, when it shows); without a bar, the full message is logged
            line = R.epoch_line(rank, epoch, results, per_rank, decision, self.wait_count, self.patience)
            shown = progress_print(trainer, line)
            if failed and not shown:
                rank_zero_info(message)
        if not act:
            return
        assert message is not None
        self.stopped_epoch = epoch
        self.stopping_reason = self._reason(results, per_rank)
        self.stopping_reason_message = message
        if self.action == "stop":
            trainer.should_stop = True
        elif self.action == "raise":
            raise SanityCheckError(message)
        else:
            rank_zero_warn(message)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.guard_metric is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(self.guard_metric)
        if value is None:
            self._warn_once(
                "guard",
                f"SanityGate: guard_metric {self.guard_metric!r} is not in trainer.callback_metrics "
                f"(known: {', '.join(sorted(trainer.callback_metrics))}); log it in validation_step",
            )
            return
        bad = math.inf if self.guard_mode == "min" else -math.inf
        self._sink(trainer).scalars({f"xai/gate/{self.guard_metric}": float(value) if self.last_passed else bad})

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, trainer: Any, pl_module: Any) -> List[C.CheckResult]:
        assert self.probe is not None

        def attribute(call: F.MethodCall) -> torch.Tensor:
            return self._attributions(trainer, pl_module, {call.name: call})[call.name]

        ctx = C.CheckContext(
            pl_module, self.probe, target=self._resolve_target(trainer, pl_module),
            outputs=self._outputs(trainer, pl_module), attribute=attribute,
            metrics=trainer.callback_metrics, trainer=trainer, chunk_size=self.chunk_size, chunking=self.chunking,
            output=self.output,
        )
        results = []
        for check in self.checks:
            try:
                results.append(check(ctx))
            except Exception as err:  # noqa: BLE001 - a failing check must not leave the other ranks waiting
                results.append(
                    C.CheckResult(
                        check.name, float("nan"), False,
                        f"{check.name} raised {type(err).__name__}: {err}", details={"error": type(err).__name__},
                    )
                )
        return results

    @staticmethod
    def _gather(trainer: Any, results: Sequence[C.CheckResult]) -> torch.Tensor:
        """``(world, checks, 2)`` values and pass flags of every rank (one collective)."""
        device = getattr(trainer.strategy, "root_device", torch.device("cpu"))
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        local = torch.tensor([[r.value, float(r.passed)] for r in results], dtype=dtype, device=device)
        gathered = trainer.strategy.all_gather(local)
        gathered = gathered.detach().cpu()
        return gathered if gathered.dim() == 3 else gathered.unsqueeze(0)

    @staticmethod
    def _reason(results: Sequence[C.CheckResult], per_rank: torch.Tensor) -> GateReason:
        if any("error" in r.details for r in results):
            return GateReason.CHECK_ERROR
        failed = ~per_rank[..., 1].bool()
        if bool((failed & torch.isnan(per_rank[..., 0])).any()):
            return GateReason.NON_FINITE
        return GateReason.CHECKS_FAILED

    # ------------------------------------------------------------------ report
    def _write_report(self, trainer: Any, sink: LogSink) -> None:
        """Write the whole report (every epoch so far) to the JSON file, atomically, and hand it to the
        loggers that keep files (an MLflow or W&B run artifact, replaced each epoch). A file that cannot
        be written is a warning naming the path and the fix, never a dead run."""
        # trainer.log_dir is a collective (a broadcast): every rank asks for it, rank 0 writes
        path = self._report_file(trainer)
        if not trainer.is_global_zero:
            return
        if path is None:
            if trainer.loggers:  # logger=False: nothing is written anywhere
                sink.file(self.REPORT_NAME, json.dumps(self.report, indent=1).encode())
            return
        tmp = path + ".tmp"
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(self.report, f, indent=1)
            os.replace(tmp, path)
        except OSError as err:
            self._warn_once(
                f"report-{path}",
                f"SanityGate: could not write its report to {path} ({type(err).__name__}: {err}); training goes "
                "on and the report stays in SanityGate.report and the logged text. Pass report_dir= a writable "
                "directory.",
            )
            return
        sink.file(self.REPORT_NAME, path)

    def _report_file(self, trainer: Any) -> Optional[str]:
        if self._report_path is None:
            if self.report_dir is None and not trainer.loggers:
                return None  # logger=False: nothing is written unless a directory is given
            directory = self.report_dir if self.report_dir is not None else trainer.log_dir
            if directory is None:
                return None
            self._report_path = os.path.join(directory, self.REPORT_NAME)
        return self._report_path

    @property
    def report_path(self) -> Optional[str]:
        """Where the JSON report is written (known after the first evaluated epoch)."""
        return self._report_path

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {
            **self._probe_state(),
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "last_passed": self.last_passed,
            "patience": self.patience,
            "report": list(self.report),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
        self.wait_count = int(state_dict.get("wait_count", 0))
        self.stopped_epoch = int(state_dict.get("stopped_epoch", 0))
        self.stopping_reason = GateReason(state_dict.get("stopping_reason", GateReason.NOT_STOPPED.value))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self.last_passed = bool(state_dict.get("last_passed", True))
        self.report[:] = list(state_dict.get("report", []))  # the same list: references stay live
