"""``DeadReLUMonitor``: dead and dormant ReLU units per layer, logged at each validation epoch."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from .. import functional as F
from .._lightning import rank_zero_warn
from ..probe import ProbeSet, ProbeSpec
from ._base import XAICallback

__all__ = ["DeadReLUMonitor"]

SOURCES = ("probe", "validation")


class DeadReLUMonitor(XAICallback):
    """Fraction of dead (never positive) and dormant ReLU units per layer, at each validation epoch.

    Every ReLU of the model is counted: ``nn.ReLU`` (also ``inplace=True``), ``nn.ReLU6`` and the
    functional calls inside ``forward`` (``F.relu``, ``torch.relu``, ``relu_``, ``F.relu6``), each named
    after the module whose output it rectifies (e.g. ``fc1``; see
    :class:`lightning_xai.functional.ReLURecorder`). A unit is a neuron of a dense output, a channel of
    a convolutional output, the last dimension of a sequence output.

    Logged (scalars through every Lightning logger and into ``trainer.callback_metrics``):

    - ``xai/dead_relu/<layer>``: fraction of the layer's units never positive;
    - ``xai/dead_relu/all``: dead units over all units, across layers;
    - ``xai/dead_relu_dormant/<layer>`` and ``xai/dead_relu_dormant/all``: fraction of units whose ReDo
      score (mean ``|activation|`` over the layer's mean, Sokar et al. 2023) is ``<= tau``;
    - ``xai/dead_relu_onrate_mean/<layer>``: mean over units of the fraction of positions where a
      unit is positive;
    - ``xai/dead_relu_onrate/<layer>``: a TensorBoard histogram of the per-unit on-rates (rank 0).

    Counts are raw sums, reduced (summed) across DDP ranks before anything is decided, so a unit
    alive on any rank is alive. Nothing stays installed on the model between epochs or after an
    exception: the hooks live only during the forward passes being counted.

    Args:
        probe: the :class:`~lightning_xai.ProbeSet` to count on (``source="probe"``), or a
            :class:`~lightning_xai.ProbeSpec` drawn from the validation data at setup. A probe of
            several inputs (a tuple or dict of tensors) is run as ``model(*inputs)`` / ``model(**inputs)``.
        source: ``"probe"``: one forward pass over the probe in eval mode, shared with the probe
            forward of the other lightning_xai callbacks (``AttributionMonitor``) when they run in
            the same epoch, so it costs at most one extra forward, and none when it comes after an
            ``AttributionMonitor`` on the same probe (it then counts on that monitor's gradient pass); ``"validation"``: count on the
            validation loop's own forward passes (all validation batches, zero extra passes; the
            sanity check is not counted).
        tau: dormancy threshold on the ReDo score (``0.0``: activations exactly zero everywhere).
        every_n_epochs: run on every n-th validation epoch.
        warn_above: warn (rank zero) whenever ``xai/dead_relu/all`` exceeds this fraction.
        log_histograms: set False to skip the on-rate histograms.
        on_error: ``"raise"`` (default) or ``"warn"``: a failure inside an epoch warns and training goes on.

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> from lightning_xai import ProbeSet
        >>> from lightning_xai.callbacks import DeadReLUMonitor
        >>> on_probe = DeadReLUMonitor(ProbeSet(torch.randn(64, 10)), tau=0.1, warn_above=0.5)
        >>> on_validation = DeadReLUMonitor(source="validation")
        >>> trainer = pl.Trainer(callbacks=[on_probe, on_validation], logger=False, enable_progress_bar=False)
    """

    dashboard_categories = ("Dead ReLU",)

    #: a probe of several inputs (a tuple or dict of tensors) is counted on ``model(*inputs)`` / ``model(**inputs)``
    accepts_structured_probes = True

    def __init__(
        self,
        probe: Union[None, ProbeSet, ProbeSpec] = None,
        source: str = "probe",
        tau: float = 0.0,
        every_n_epochs: int = 1,
        warn_above: Optional[float] = None,
        log_histograms: bool = True,
        on_error: str = "raise",
        output: F.OutputSpec = None,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be 'probe' or 'validation', got {source!r}")
        if source == "probe" and probe is None:
            raise ValueError(
                "DeadReLUMonitor(source='probe') needs a probe: pass probe=ProbeSet.from_dataset(val_dataset, "
                "n=256), or count on the validation batches with source='validation'"
            )
        if source == "validation" and probe is not None:
            raise ValueError(
                "DeadReLUMonitor(source='validation') counts on the validation batches and does not use a "
                "probe: drop probe=..., or use source='probe' to count on the probe"
            )
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise ValueError(f"tau must be a finite number >= 0 (ReDo uses 0.0 to 0.1), got {tau!r}")
        if warn_above is not None and (
            isinstance(warn_above, bool) or not isinstance(warn_above, (int, float)) or not 0 <= warn_above < 1
        ):
            raise ValueError(f"warn_above must be None or a fraction in [0, 1), got {warn_above!r}")
        super().__init__(probe, every_n_epochs=every_n_epochs, probe_required=False, on_error=on_error, output=output)
        self.source = source
        self.tau = float(tau)
        self.warn_above = None if warn_above is None else float(warn_above)
        self.log_histograms = bool(log_histograms)
        self._recorder: Optional[F.ReLURecorder] = None
        self._tap: Optional[Any] = None
        self._shares_outputs = True
        #: the last epoch's :class:`~lightning_xai.functional.ReLUSummary` (after the DDP reduction)
        self.last_summary: Optional[F.ReLUSummary] = None

    def _state_key_fields(self) -> Dict[str, Any]:
        return {**super()._state_key_fields(), "source": self.source, "tau": self.tau}

    def declared_metrics(self) -> Tuple[str, ...]:
        return (r"xai/dead_relu/.+", r"xai/dead_relu_dormant/.+", r"xai/dead_relu_onrate_mean/.+")

    def dashboard_charts(self) -> Dict[str, Dict[str, List[str]]]:
        return {"Dead ReLU": {"dead units (fraction)": [r"xai/dead_relu/.*"],
                              "dormant units (fraction)": [r"xai/dead_relu_dormant/.*"]}}

    # ------------------------------------------------------------------ set-up
    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        # the base's setup calls this once the probe is a ProbeSet (a ProbeSpec is drawn first)
        if self.source != "probe":
            return
        out = self._probe_fits(pl_module, fix=", or use source='validation'")
        if out is None:
            return
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        # the shared probe forward keeps the model's output; other output types get their own pass
        self._shares_outputs = isinstance(first, Tensor)

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self._cleanup(trainer)
        if not self._should_run(trainer):
            return
        if self.source == "validation":
            self._recorder = F.ReLURecorder(pl_module)
        else:
            assert self.probe is not None
            self._tap = self._tap_key()
            self._engine(trainer).add_tap(self._tap, self.probe.fingerprint(), F.ReLURecorder)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._recorder is not None and not self._recorder.installed:
            self._recorder.__enter__()

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._recorder is not None:
            self._recorder.__exit__(None, None, None)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_run(trainer):
            return
        try:
            if self.source == "validation":
                if self._recorder is None:
                    return
                self._recorder.__exit__(None, None, None)
                counts = dict(self._recorder.counts)
            else:
                counts = self._probe_counts(trainer, pl_module)
        finally:
            self._cleanup(trainer)
        counts = self._reduce(trainer, pl_module, counts)
        self._report(trainer, F.relu_statistics(counts, self.tau))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._cleanup(trainer)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._cleanup(trainer)

    def _cleanup(self, trainer: Any) -> None:
        if self._recorder is not None:
            self._recorder.__exit__(None, None, None)
            self._recorder = None
        if self._tap is not None:
            self._engine(trainer).remove_tap(self._tap)
            self._tap = None

    # ------------------------------------------------------------------ counting
    def _tap_key(self) -> Any:
        assert self.probe is not None
        return ("relu_counts", self.probe.fingerprint())

    def _probe_counts(self, trainer: Any, pl_module: Any) -> Dict[str, F.ReLUCounts]:
        """Counts over the probe: from the epoch's shared probe forward, else from one own pass."""
        assert self.probe is not None
        cache = self._engine(trainer)
        key = self._tap_key()
        recorder = cache.get(key)
        if recorder is None and self._shares_outputs:
            self._outputs(trainer, pl_module)  # the shared forward; our tap records on it
            recorder = cache.get(key)
        if recorder is None:  # outputs were computed before the tap was set, or are not tensors
            x = self.probe.inputs_for(pl_module)
            with F.explaining(pl_module), torch.no_grad(), F.ReLURecorder(pl_module) as recorder:
                F.call_model(pl_module, x)
            cache.put(key, recorder)
        return dict(recorder.counts)

    def _reduce(self, trainer: Any, pl_module: Any, counts: Dict[str, F.ReLUCounts]) -> Dict[str, F.ReLUCounts]:
        """The counts summed over the DDP ranks (every rank calls this: it is a collective).

        The counts are :class:`~lightning_xai.functional.ReLUCountState` states that torchmetrics
        sums; their layout is the union of the layers the ranks saw (a rank whose data skipped a
        layer adds zeros there), agreed on in one exchange of layer names.
        """
        if not (getattr(trainer, "world_size", 1) > 1 and torch.distributed.is_available()
                and torch.distributed.is_initialized()):
            return counts  # one process: nothing to sum
        layouts: List[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(layouts, F.relu_layout(counts))
        layout = sorted({entry for part in layouts for entry in map(tuple, part)})
        state = F.ReLUCountState(layout).to(getattr(pl_module, "device", torch.device("cpu")))
        state.update(counts)
        return state.compute()

    # ------------------------------------------------------------------ logging
    def _report(self, trainer: Any, summary: F.ReLUSummary) -> None:
        self.last_summary = summary
        if not summary.layers:
            self._warn_once(
                "no-relu",
                "DeadReLUMonitor: no ReLU ran in the model's forward (nn.ReLU, nn.ReLU6, F.relu, torch.relu, "
                "relu_, F.relu6 are caught), so there is nothing to log; remove the callback for this model",
            )
            return
        broken = [k for k, s in summary.layers.items() if s.nonfinite]
        if broken:
            self._warn_once(
                "nonfinite",
                f"DeadReLUMonitor: the activations of {', '.join(broken[:3])} held NaN or infinity at epoch "
                f"{trainer.current_epoch}; their dead fractions (and xai/dead_relu/all) are logged as NaN",
            )
        names = self._tag_names(summary.layers)
        scalars: Dict[str, float] = {}
        for layer, stats in summary.layers.items():
            scalars[f"xai/dead_relu/{names[layer]}"] = stats.dead_fraction
        scalars["xai/dead_relu/all"] = summary.dead_fraction
        for layer, stats in summary.layers.items():
            scalars[f"xai/dead_relu_dormant/{names[layer]}"] = stats.dormant_fraction
        scalars["xai/dead_relu_dormant/all"] = summary.dormant_fraction
        for layer, stats in summary.layers.items():
            scalars[f"xai/dead_relu_onrate_mean/{names[layer]}"] = stats.mean_on_rate
        self._sink(trainer).scalars(scalars)
        if self.log_histograms:
            self._log_histograms(trainer, {names[k]: s.on_rate for k, s in summary.layers.items()})
        if self.warn_above is not None and summary.dead_fraction > self.warn_above:
            worst = sorted(summary.layers.items(), key=lambda kv: -kv[1].dead_fraction)[:3]
            detail = ", ".join(f"{k} {s.dead}/{s.units}" for k, s in worst)
            rank_zero_warn(
                f"DeadReLUMonitor: {summary.dead}/{summary.units} ReLU units ({summary.dead_fraction:.1%}) are dead "
                f"at epoch {trainer.current_epoch}, above warn_above={self.warn_above:g} (worst: {detail}). "
                "Consider a lower learning rate, He initialisation, or LeakyReLU/GELU."
            )

    @staticmethod
    def _tag_names(layers: Mapping[str, Any]) -> Dict[str, str]:
        # a layer called "all" must not overwrite the across-layer value
        return {k: ("all_" if k == "all" else k) for k in layers}

    def _log_histograms(self, trainer: Any, on_rates: Mapping[str, Tensor]) -> None:
        if not trainer.is_global_zero:
            return
        sink = self._sink(trainer)
        taken = 0
        for layer, rates in on_rates.items():
            taken += sink.histogram(f"xai/dead_relu_onrate/{layer}", rates.detach().double().cpu().numpy())
        if on_rates and not taken and trainer.loggers:  # logger=False: the user asked for no logging at all
            self._warn_once(
                "no-tensorboard",
                "DeadReLUMonitor: none of your loggers shows histograms (TensorBoardLogger and WandbLogger "
                "do), so the on-rate histograms are not logged (scalars still go to your loggers). Add "
                "pytorch_lightning.loggers.TensorBoardLogger, or pass log_histograms=False.",
            )

    # ------------------------------------------------------------------ state
    _RUN_STATE = ("last_summary",)

    def state_dict(self) -> Dict[str, Any]:
        return {**self._probe_state(), "source": self.source, "tau": self.tau}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
