"""``FeatureDriftMonitor``: how much what the model relies on changes from epoch to epoch."""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import functional as F
from ..functional.drift import GridLike
from ..functional.methods import MethodLike
from ..functional.perturbation import DEFAULT_GRID as _DEFAULT_GRID
from ..probe import ProbeSet, ProbeSpec
from ..drift_reference import (
    REFERENCE_FORMAT, load_reference, parse_reference, reference_entry, reference_from_file, tag_names, write_reference,
)
from ._base import TargetSpec, XAICallback

__all__ = ["FeatureDriftMonitor", "load_reference", "REFERENCE_FORMAT"]

PathLike = Union[str, "os.PathLike[str]"]


#: drift metrics that are 0 when nothing moved (the others are 1 then): charted apart
_DIVERGENCES = ("js_divergence",)


class FeatureDriftMonitor(XAICallback):
    """Track which input features the model relies on, and how much that changes, epoch after epoch.

    At each validation epoch (after ``warmup_epochs``, every ``every_n_epochs``) it attributes the
    probe with ``method`` and reduces the maps to a **global importance** vector
    (:func:`~lightning_xai.functional.feature_importance`: mean ``|attribution|`` per feature for
    tabular probes; per channel and cell of a ``grid`` over the image for image probes), and keeps the
    **per-sample maps** (:func:`~lightning_xai.functional.per_sample_maps`). It then compares them with
    the previous run epoch (``prev``) and with a reference (``ref``) and logs, through every Lightning
    logger and into ``trainer.callback_metrics`` (so ``EarlyStopping``/``ModelCheckpoint`` can
    monitor them):

    - ``xai/drift/<method>/<metric>/prev`` and ``xai/drift/<method>/<metric>/ref`` for each of
      ``metrics`` (``spearman``, ``kendall``, ``topk_overlap``, ``ndcg``, ``js_divergence``,
      ``map_spearman``, ``map_ssim``; see :mod:`lightning_xai.functional.drift` for the definitions
      and the values of degenerate inputs). ``prev`` starts at the second run epoch; ``ref`` at the
      reference epoch (where it compares the reference with itself);
    - for tabular probes, ``xai/importance/<method>/<feature>``: one curve per feature (feature names
      from the probe, with spaces and ``/`` replaced by ``_``);
    - the image ``xai/drift/<method>/trajectory`` (TensorBoard): features x epochs heatmap of each
      feature's share of the total importance.

    To stop training when the explanations drift, as SageMaker Clarify alerts when NDCG falls
    below 0.90: ``EarlyStopping(monitor="xai/drift/integrated_gradients/ndcg/ref", mode="max",
    divergence_threshold=0.9, patience=10**9)``. The large patience switches off EarlyStopping's
    no-improvement rule, which would otherwise fire a few epochs after the reference epoch, where
    every ``ref`` metric is at its best. A ``prev`` tag is missing at the first monitored epoch:
    monitor it with ``strict=False``.

    The attributions come from the per-trainer cache: with an
    :class:`~lightning_xai.callbacks.AttributionMonitor` that computes the same method (same options,
    probe and target), they are computed once per epoch for both.

    History and reference are part of the callback's checkpoint state: a run resumed with
    ``trainer.fit(..., ckpt_path=...)`` logs the same values as an uninterrupted one.

    Args:
        probe: the :class:`~lightning_xai.ProbeSet` to explain, or a :class:`~lightning_xai.ProbeSpec`
            drawn from the validation data at setup (for LightningCLI configs).
        method: one method name from ``lightning_xai.functional.METHODS``, or ``{name: options}``
            with one entry, e.g. ``{"integrated_gradients": {"n_steps": 32}}``.
        metrics: names from ``lightning_xai.functional.DRIFT_METRICS`` (default: all).
        reference: what ``ref`` compares with: ``"first"`` (the first run epoch after the warmup),
            ``"epoch:N"`` (the run epoch ``N``), a tensor (an importance vector as
            :func:`~lightning_xai.functional.feature_importance` makes for this probe, or attributions
            shaped like the probe's inputs), or the path of a file written by :meth:`save_reference`
            in an earlier run.
        top_k: ``k`` of ``topk_overlap``.
        warmup_epochs: epochs ``0 .. warmup_epochs - 1`` are not monitored (early epochs of a fresh
            model are noise, and a dead model's all-zero importances make a poor reference).
        every_n_epochs: run on every n-th validation epoch.
        target: ``"predicted"`` (default), ``"true"``, a class index or a callable, as in
            :class:`~lightning_xai.callbacks.AttributionMonitor`.
        grid: rows and columns of the grid of cells over images (an int for a square grid). A method
            with superpixels (``kernel_shap``, ``lime``, ``shapley_sampling``, ``feature_ablation``)
            gets this grid as its own, so that each feature is one superpixel and the global
            importance is mean ``|SHAP|`` per superpixel (the cells coincide when the grid divides
            the image; a method's own ``grid`` must equal this one; with its own ``feature_mask`` the
            importance is per grid cell). Sequences ``(N, C, T)``: the ``rows x columns`` cells are
            time bins, per channel (features ``ch<c>[t<start>:<end>]``).
        token_features: for token ids, what a feature is: ``"vocabulary"`` (default: each token of
            the probe's vocabulary, named by the probe's ``vocab``/``decode``; its importance is the
            attribution it gets wherever it occurs, so a shortcut token rising shows as drift) or
            ``"position"`` (each position of the sequence, ``pos<i>``). Padding is left out.
        log_importance: log the per-feature curves (tabular probes).
        log_trajectory: log the trajectory heatmap.
        chunk_size: rows per forward+backward pass (default: the probe size).
        dtype: precision of the attributions (``"float32"`` default), as in ``AttributionMonitor``.
        on_error: ``"raise"`` (default) or ``"warn"``: a failure inside an epoch warns and training goes on.
        output: which of the model's outputs is explained when it returns a tuple, dict or object: an
            index, a key or attribute name, or ``fn(outputs) -> (N,) or (N, classes)``.
        embedding, pad_id: for token ids, the dotted name of the ``nn.Embedding`` they are attributed
            at (default: the one that reads them) and the padding id (the baseline; zeroed before
            the importances).

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> from lightning_xai import ProbeSet
        >>> from lightning_xai.callbacks import FeatureDriftMonitor
        >>> probe = ProbeSet(torch.randn(16, 4), targets=torch.arange(16) % 2, feature_names=["a", "b", "c", "d"])
        >>> drift = FeatureDriftMonitor(probe, method="saliency", metrics=["spearman", "ndcg"], top_k=2)
        >>> trainer = pl.Trainer(callbacks=[drift], logger=False, enable_progress_bar=False)
    """

    dashboard_categories = ("Drift",)

    #: several inputs: drift over the attributed inputs' features, concatenated (``<input>/f<i>``)
    accepts_structured_probes = True

    def __init__(
        self,
        probe: Union[ProbeSet, ProbeSpec],
        method: Union[MethodLike, Mapping[Any, Mapping[str, Any]]] = "integrated_gradients",
        metrics: Union[str, Sequence[str]] = F.DRIFT_METRICS,
        reference: Union[str, Tensor, os.PathLike] = "first",
        top_k: int = 5,
        warmup_epochs: int = 0,
        every_n_epochs: int = 1,
        target: TargetSpec = "predicted",
        grid: GridLike = (4, 4),
        log_importance: bool = True,
        log_trajectory: bool = True,
        chunk_size: Optional[int] = None,
        dtype: Union[str, torch.dtype] = "float32",
        on_error: str = "raise",
        output: F.OutputSpec = None,
        embedding: Optional[str] = None,
        pad_id: int = 0,
        token_features: str = "vocabulary",
    ) -> None:
        super().__init__(
            probe, target=target, every_n_epochs=every_n_epochs, chunk_size=chunk_size, dtype=dtype, on_error=on_error,
            output=output, embedding=embedding, pad_id=pad_id,
        )
        if token_features not in ("vocabulary", "position"):
            raise ValueError(
                f"token_features must be 'vocabulary' (each token of the probe's vocabulary) or 'position' "
                f"(each position of the sequence), got {token_features!r}"
            )
        self.token_features = token_features
        #: token ids: the probe's distinct tokens (the features with ``token_features="vocabulary"``)
        self._vocabulary: Optional[Tensor] = None
        methods = F.resolve_methods(method)
        if len(methods) != 1:
            raise ValueError(
                f"FeatureDriftMonitor follows one method, got {sorted(methods)}: add one monitor per method"
            )
        self.method, self._call = next(iter(methods.items()))
        self.grid = F.check_grid(grid)
        self._call = self._superpixels_on_grid(self._call)
        self.method_options = dict(self._call.options)
        self.metrics = F.check_metrics(metrics)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
        if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
        self.top_k = top_k
        self.warmup_epochs = warmup_epochs
        self.log_importance = bool(log_importance)
        self.log_trajectory = bool(log_trajectory)

        #: feature names and their tag forms: known once the probe is (a ``ProbeSpec`` is drawn at setup)
        self._names: List[str] = []
        self._tag_names: List[str] = []
        #: a tensor or file reference waiting for the probe to be drawn: ``("tensor"|"file", value)``
        self._pending_reference: Optional[Tuple[str, Any]] = None
        #: one entry per run epoch: ``{"epoch": int, "importance": 1-D float64 tensor}``
        self.history: List[Dict[str, Any]] = []
        #: the latest values logged, by tag
        self.last_scores: Dict[str, float] = {}
        self._last_maps: Optional[Tensor] = None
        self._reference: Optional[Dict[str, Any]] = None
        self._reference_epoch: Optional[int] = None
        self._reference_spec = self._parse_reference(reference)
        if isinstance(self.probe, ProbeSet):
            self._on_probe_drawn()

    def _superpixels_on_grid(self, call: Any) -> Any:
        """For a method with superpixels (``kernel_shap``, ``lime``, ...: a ``grid`` option), make its
        features the drift grid's cells, so that an image's global importance is the mean |value| of
        each superpixel: the monitor's grid is given to the method unless the method has its own
        ``grid`` (which must then be the monitor's) or ``feature_mask`` (importance is then per cell)."""
        if not (call.method.accepts("grid") and call.method.accepts("feature_mask")):
            return call
        opts = dict(call.options)
        if opts.get("feature_mask") is not None:
            return call
        if opts.get("grid") is not None:
            if F.check_grid(opts["grid"]) != self.grid:
                raise ValueError(
                    f"FeatureDriftMonitor: {self.method}'s grid {F.check_grid(opts['grid'])} is not the monitor's grid "
                    f"{self.grid}, so its superpixels would not be the features whose importance drifts; pass the "
                    f"same grid to both, e.g. FeatureDriftMonitor(..., grid={F.check_grid(opts['grid'])})"
                )
            return call
        if self.grid == F.check_grid(_DEFAULT_GRID):  # the method's own default: options (and cache) unchanged
            return call
        return F.MethodCall(call.method, {**opts, "grid": self.grid})

    def _on_probe_drawn(self) -> None:
        """Names from the probe; a tensor or file reference is checked against it (now, or at setup for a spec)."""
        probe = self.probe
        assert isinstance(probe, ProbeSet)
        ids, padding = probe.token_ids(), self._padding()
        if ids is not None and self.token_features == "vocabulary":
            self._vocabulary = F.token_vocabulary(ids, None if padding is None else ~padding)
        if probe.structured:  # several inputs: named from the first maps (the attributed inputs' features)
            if self._pending_reference is not None:
                raise ValueError(
                    "FeatureDriftMonitor: a tensor or file reference needs a probe of one input; with several "
                    "inputs use reference='first' or 'epoch:N'"
                )
            self._names, self._tag_names = [], []
            return
        if probe.kind == "text":
            self._names = self._token_names(int(probe.inputs.shape[1]))
        else:
            self._names = F.importance_names(
                tuple(probe.inputs.shape[1:]), self.grid, probe.feature_names if probe.kind == "tabular" else None
            )
        self._tag_names = tag_names(self._names)
        if self._pending_reference is not None:
            kind, value = self._pending_reference
            self._pending_reference = None
            self._reference = self._reference_from_tensor(value) if kind == "tensor" else self._reference_from_file(value)

    # ------------------------------------------------------------------ arguments
    def _parse_reference(self, reference: Any) -> str:
        """Validate ``reference``; fixed references (tensor, file) are read once the probe is known.

        Returns its description.
        """
        spec = parse_reference(reference, self.warmup_epochs, self.every_n_epochs)
        self._pending_reference, self._reference_epoch = spec.pending, spec.epoch
        return spec.description

    def _reference_is_from_run(self) -> bool:
        """True for 'first' and 'epoch:N' (set while training); False for a tensor or a file."""
        return self._reference_spec == "first" or self._reference_epoch is not None

    def _expected_size(self) -> int:
        return len(self._names)

    def _reference_from_tensor(self, t: Tensor) -> Dict[str, Any]:
        assert self.probe is not None
        return reference_entry(t, tuple(self.probe.inputs.shape), self.grid, self._expected_size())

    def _reference_from_file(self, path: str) -> Dict[str, Any]:
        assert self.probe is not None
        return reference_from_file(path, self.method, self._expected_size(), self.grid, self.probe.fingerprint())

    def _state_key_fields(self) -> Dict[str, Any]:
        fields = {
            **super()._state_key_fields(),
            "method": self.method,
            "options": repr(F.options_key({k: v for k, v in self.method_options.items() if k != "chunk_size"})),
        }
        if self.token_features != "vocabulary":  # absent by default: the keys of existing checkpoints stay
            fields["token_features"] = self.token_features
        return fields

    def declared_metrics(self) -> Tuple[str, ...]:
        m = re.escape(self.method)
        return (rf"xai/drift/{m}/({'|'.join(self.metrics)})/(prev|ref)", rf"xai/importance/{m}/.+")

    def dashboard_charts(self) -> Dict[str, Dict[str, List[str]]]:
        """Agreement metrics (1 when nothing moved) apart from divergences (0 when nothing moved), against
        the previous epoch and the reference; per-feature importance only for tabular probes (a probe
        still to be drawn, a ``ProbeSpec``, may be tabular: the chart is laid out)."""
        m = re.escape(self.method)
        groups = {
            "agreement (1 = same)": [x for x in self.metrics if x not in _DIVERGENCES],
            "divergence (0 = same)": [x for x in self.metrics if x in _DIVERGENCES],
        }
        charts: Dict[str, List[str]] = {}
        for against, suffix in (("vs previous epoch", "prev"), ("vs reference", "ref")):
            for kind, names in groups.items():
                if names:
                    charts[f"{against}: {kind}"] = [rf"xai/drift/{m}/({'|'.join(names)})/{suffix}$"]
        if self.log_importance and not (isinstance(self.probe, ProbeSet) and self.probe.kind != "tabular"):
            charts["global importance"] = [rf"xai/importance/{m}/.*"]
        return {"Drift": charts}

    def metric_status(self, key: str) -> Optional[str]:
        """Why ``key`` has no value yet (the gate's drift checks are then "not yet applicable"), or None."""
        if not key.startswith(f"xai/drift/{self.method}/"):
            return None
        runs = len(self.history)
        if runs == 0:
            return f"FeatureDriftMonitor has not run yet (warmup_epochs={self.warmup_epochs})"
        if key.endswith("/prev") and runs < 2:
            return "no previous epoch to compare with yet"
        if key.endswith("/ref") and self._reference is None:
            return f"the reference ({self._reference_spec}) is not set yet"
        return None

    # ------------------------------------------------------------------ hooks
    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        super()._setup_checks(trainer, pl_module)
        if self.method == "grad_cam":
            F.resolve_layer(pl_module, self.method_options.get("layer"))
        self._try_methods(trainer, pl_module, {self.method: self._call})

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_run(trainer) or trainer.current_epoch < self.warmup_epochs:
            return
        attr = self._attributions(trainer, pl_module, {self.method: self._call})[self.method]
        padding = self._padding()
        if not isinstance(attr, Tensor):
            attr = self._concatenated(attr, padding)
        elif padding is not None and tuple(attr.shape) == tuple(padding.shape):
            attr = self._token_features(attr, padding)
        self._publish(trainer, self.update(trainer.current_epoch, attr))

    def _token_features(self, attr: Tensor, padding: Tensor) -> Tensor:
        """Per-token maps ``(N, T)`` as the features: per vocabulary item, or per position (padding as 0)."""
        if self._vocabulary is None:
            return attr.masked_fill(padding.to(attr.device), 0.0)
        ids = self.probe.token_ids() if isinstance(self.probe, ProbeSet) else None
        assert ids is not None
        return F.token_bag(attr, ids, self._vocabulary, ~padding)

    def _token_names(self, length: int) -> List[str]:
        if self._vocabulary is None:
            return [f"pos{i}" for i in range(length)]
        assert isinstance(self.probe, ProbeSet)
        return self.probe.token_text(self._vocabulary.tolist())

    def _concatenated(self, maps: Any, padding: Optional[Tensor]) -> Tensor:
        """Maps of several inputs as one ``(N, features)`` tensor: each attributed input's features in
        turn, named ``<input>/<feature>`` (token ids: per vocabulary item or position, padding left out)."""
        parts: List[Tensor] = []
        names: List[str] = []
        ids_key = self.probe.token_key() if isinstance(self.probe, ProbeSet) else None
        for (key, part), label in zip(F.input_entries(maps), F.input_names(maps)):
            if part is None:
                continue
            if padding is not None and key == ids_key and tuple(part.shape) == tuple(padding.shape):
                part = self._token_features(part, padding)
                parts.append(part)
                names.extend(f"{label}/{name}" for name in self._token_names(int(padding.shape[1])))
                continue
            flat = part.reshape(part.shape[0], -1)
            parts.append(flat)
            names.extend(f"{label}/f{i}" for i in range(flat.shape[1]))
        if names != self._names:
            self._names, self._tag_names = names, tag_names(names)
        return torch.cat(parts, dim=1)

    def _publish(self, trainer: Any, scores: Mapping[str, float]) -> None:
        sink = self._sink(trainer)
        sink.scalars(scores)
        if self.log_trajectory and trainer.is_global_zero:
            sink.image(f"xai/drift/{self.method}/trajectory", self.trajectory_image())

    # ------------------------------------------------------------------ decisions (no Lightning)
    def update(self, epoch: int, attributions: Tensor) -> Dict[str, float]:
        """Add one epoch's attributions of the probe; return the tags and values to log."""
        importance = F.feature_importance(attributions, self.grid)
        maps = F.per_sample_maps(attributions)
        if importance.numel() != len(self._names):  # e.g. grad_cam(upsample=False): the layer's resolution
            self._names = F.importance_names(tuple(attributions.shape[1:]), self.grid)
            self._tag_names = tag_names(self._names)
        if self._reference is not None and self._reference["importance"].numel() != importance.numel():
            raise ValueError(
                f"FeatureDriftMonitor: the reference has {self._reference['importance'].numel()} importance values, "
                f"the {self.method} attributions of shape {tuple(attributions.shape)} give {importance.numel()}: "
                "build the reference from attributions of the same method, options and grid"
            )
        prefix = f"xai/drift/{self.method}"
        scores: Dict[str, float] = {}
        if self.history:
            prev = F.drift_scores(
                self.history[-1]["importance"], importance, self._same_shape(self._last_maps, maps), maps,
                self.metrics, self.top_k,
            )
            scores.update({f"{prefix}/{m}/prev": v for m, v in prev.items()})
        if self._reference is None and (
            self._reference_spec == "first" or (self._reference_epoch is not None and epoch == self._reference_epoch)
        ):
            self._reference = {"epoch": epoch, "importance": importance, "maps": maps}
        if self._reference is not None:
            ref = F.drift_scores(
                self._reference["importance"], importance, self._same_shape(self._reference.get("maps"), maps), maps,
                self.metrics, self.top_k,
            )
            scores.update({f"{prefix}/{m}/ref": v for m, v in ref.items()})
        elif self._reference_epoch is not None and epoch > self._reference_epoch:
            self._warn_once(
                "reference-missed",
                f"FeatureDriftMonitor: the reference epoch {self._reference_epoch} was never monitored "
                "(no validation ran then), so no 'ref' values are logged; pick an epoch that is validated",
            )
        if self.log_importance and self.probe is not None and self.probe.kind == "tabular":
            for name, value in zip(self._tag_names, importance.tolist()):
                scores[f"xai/importance/{self.method}/{name}"] = value
        self.history.append({"epoch": int(epoch), "importance": importance})
        self._last_maps = maps
        self.last_scores = scores
        return scores

    def _snapshot(self) -> Any:
        # update() appends to the history and replaces the other fields (never changes them in place)
        return (
            len(self.history), self._last_maps, self._reference, self.last_scores, self._names, self._tag_names
        )

    def _restore(self, snapshot: Any) -> None:
        n, self._last_maps, self._reference, self.last_scores, self._names, self._tag_names = snapshot
        del self.history[n:]

    def _same_shape(self, stored: Optional[Tensor], maps: Tensor) -> Optional[Tensor]:
        """Stored per-sample maps if they match this epoch's; else None (map metrics skipped, warned once)."""
        if stored is None or stored.shape == maps.shape:
            return stored
        self._warn_once(
            "maps-shape",
            f"FeatureDriftMonitor: stored per-sample maps of shape {tuple(stored.shape)} do not match this epoch's "
            f"{tuple(maps.shape)} (another probe?); the map_* metrics are skipped for them",
        )
        return None

    @property
    def reference(self) -> Optional[Dict[str, Any]]:
        """The reference in use (``epoch``, ``importance``, ``maps``), or None before it is set."""
        return self._reference

    def trajectory(self) -> Tuple[Tensor, List[int], List[str]]:
        """``(shares, epochs, names)``: each feature's share of the total importance per run epoch.

        ``shares`` is ``(features, epochs)``; an all-zero epoch is spread evenly.
        """
        if not self.history:
            return torch.zeros(len(self._names), 0, dtype=torch.float64), [], list(self._names)
        m = torch.stack([h["importance"] for h in self.history], dim=1)
        total = m.sum(0, keepdim=True)
        shares = torch.where(total > 0, m / torch.where(total > 0, total, torch.ones_like(total)), 1.0 / m.shape[0])
        return shares, [h["epoch"] for h in self.history], list(self._names)

    def trajectory_image(self) -> Any:
        """The trajectory as an HxWx3 uint8 heatmap (features x epochs)."""
        shares, epochs, names = self.trajectory()
        # several validations per epoch (val_check_interval): label them epoch.k, not the same epoch twice
        labels = [str(e) for e in epochs]
        if len(set(epochs)) < len(epochs):
            seen: Dict[int, int] = {}
            labels = []
            for e in epochs:
                seen[e] = seen.get(e, -1) + 1
                labels.append(f"{e}.{seen[e]}")
        return F.heatmap_chart(
            shares, names, labels,
            title=f"{self.method}: each feature's share of the importance", col_title="epoch",
        )

    def save_reference(self, path: PathLike, which: str = "latest") -> None:
        """Write the latest epoch's (``which="latest"``) or the reference's importances to ``path``.

        Pass the path as ``reference=`` in a later run to compare with this one. The file is a
        ``torch.save`` of a dict (``format``, ``version``, ``method``, ``epoch``, ``grid``,
        ``importance``, ``maps``, ``probe_fingerprint``, ``feature_names``) of tensors and plain values.
        """
        if which not in ("latest", "reference"):
            raise ValueError(f"which must be 'latest' or 'reference', got {which!r}")
        assert self.probe is not None
        if which == "latest":
            if not self.history:
                raise RuntimeError("nothing to save yet: the monitor has not run (train or validate first)")
            entry = {"epoch": self.history[-1]["epoch"], "importance": self.history[-1]["importance"],
                     "maps": self._last_maps}
        else:
            if self._reference is None:
                raise RuntimeError("no reference yet: it is set at the reference epoch")
            entry = self._reference
        write_reference(
            path, method=self.method, epoch=entry.get("epoch"), grid=list(self.grid), importance=entry["importance"],
            maps=entry.get("maps"), probe_fingerprint=self.probe.fingerprint(), feature_names=list(self._names),
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {
            **self._probe_state(),
            "version": 1,
            "method": self.method,
            "reference_spec": self._reference_spec,
            "history": [{"epoch": h["epoch"], "importance": h["importance"].clone()} for h in self.history],
            "last_maps": None if self._last_maps is None else self._last_maps.clone(),
            "reference": None
            if self._reference is None
            else {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self._reference.items()},
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
        self.history = [
            {"epoch": int(h["epoch"]), "importance": torch.as_tensor(h["importance"]).double()}
            for h in state_dict.get("history", [])
        ]
        maps = state_dict.get("last_maps")
        self._last_maps = None if maps is None else torch.as_tensor(maps).double()
        saved_spec = state_dict.get("reference_spec")
        if saved_spec == self._reference_spec:
            ref = state_dict.get("reference")
            if ref is not None and self._reference_is_from_run():
                self._reference = dict(ref)
        elif saved_spec is not None:
            warnings.warn(
                f"FeatureDriftMonitor: the checkpoint's reference was {saved_spec!r}, this monitor's is "
                f"{self._reference_spec!r}; the checkpoint's reference is not used",
                stacklevel=2,
            )
