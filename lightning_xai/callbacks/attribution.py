"""``AttributionMonitor``: attribution maps of a fixed probe set, logged at each validation epoch."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import functional as F
from ..functional.methods import MethodLike
from ..probe import ProbeSet, ProbeSpec
from ..renderers import RenderContext, Renderer, renderer_for
from ..sink import markdown_table
from ._base import TargetSpec, XAICallback

__all__ = ["AttributionMonitor"]


class AttributionMonitor(XAICallback):
    """Explain the model on a fixed probe set at the end of each validation epoch.

    For each method it logs, under ``xai/attr/<method>``:

    - image probes ``(N, C, H, W)``: a grid of the probe images (small ones upscaled without blur)
      above their heatmaps, in colour-blind-safe colormaps (viridis; blue-white-red for signed
      maps) with a colour bar as legend, a colour scale kept across epochs (``color_scale``) so
      that change is visible, and captions with the true (``y``) and predicted (``p``) class;
      misclassified samples get a vermillion caption and frame;
    - tabular probes ``(N, F)``: a bar chart of mean ``|attribution|`` per feature (feature names
      from the probe), its axis kept across epochs by the same policy;
    - signals ``(N, C, T)`` and token ids ``(N, T)``: lines over a heat strip; tokens on coloured
      backgrounds, padding left out;
    - probes of several inputs (a tuple or dict): one panel per attributed input, side by side, each
      drawn as that input alone would be, each with its own colour scale (kept as ``<method>/<input>``);
    - scalars ``xai/attr/<method>/gini``, ``/entropy`` and ``/top10_mass`` that summarise the maps
      (mean over the probe), through every Lightning logger and into ``trainer.callback_metrics``;
    - text ``xai/attr/summary``: those scalars as a markdown table, one row per method, with each
      method's colour-scale maximum and the share of the map it clips (TensorBoard's *Text* tab).

    Its scalars appear in the *Attribution summaries* section of the custom-scalars dashboard that
    the first lightning_xai callback of a run writes next to the loss curves.

    The model is explained in eval mode with its parameters frozen; training is not perturbed
    (same weights, bit for bit, as without the callback). Runs in ``fit`` and in
    ``trainer.validate()`` (inference mode), never in the sanity check.

    Args:
        probe: the :class:`~lightning_xai.ProbeSet` to explain.
        methods: methods as :func:`lightning_xai.functional.get_method` takes them (built-in or
            registered names, Captum classes, :class:`~lightning_xai.AttributionMethod` objects,
            callables), a list of them, or a mapping from method to options, e.g.
            ``{"integrated_gradients": {"n_steps": 64}, "grad_cam": {"layer": "conv2"}}``; options
            are checked against each method's signature here. ``saliency``, ``input_x_gradient`` and
            ``grad_cam`` share one forward+backward pass.
        target: ``"predicted"`` (default), ``"true"`` (probe targets), a class index, or a callable
            ``fn(outputs, targets) -> class indices``.
        every_n_epochs: run on every n-th validation epoch.
        max_images: at most this many probe samples in an image grid.
        chunk_size: rows per forward+backward pass (default: the probe size, capped at the size of
            the training batches, so that explaining never needs more memory than a training step).
        log_images: set False to log only the scalars (and the text summary).
        color_scale: how each method's colour-scale maximum is chosen across epochs:
            ``"grow"`` (default): set at the first logged epoch and kept, so the same colour means
            the same value from epoch to epoch, but raised in steps of sqrt(2) (never lowered) when
            the maps outgrow it: gradients usually grow while a network trains, and a scale fixed on
            the untrained network saturates (31% of the pixels of the digits demo's saliency maps
            by epoch 8);
            ``"fixed"``: set at the first logged epoch and never changed (the legend under the
            colour bar says how much is clipped, and a warning suggests ``"grow"`` past 25%);
            ``"per_epoch"``: rescaled to each epoch's maps (compare shapes, not magnitudes);
            a positive number: that maximum, always. The legend under the colour bar names the
            policy and the epoch the scale was set; the maxima are saved in the checkpoint, so a
            resumed run keeps its colours. Each input of several keeps its own (``<method>/<input>``).
        text_summary: log the ``xai/attr/summary`` markdown table each epoch.
        renderer: how the maps are drawn (a :class:`~lightning_xai.renderers.Renderer`); default the
            one :func:`~lightning_xai.renderers.renderer_for` picks for the probe (images, tables,
            signals, tokens; several inputs side by side).
        dtype: precision of the attributions: ``"float32"`` (default, also for a bf16/fp16 model),
            ``"bfloat16"`` or ``"float16"`` (autocast: faster, less exact), ``"float64"``.
        on_error: ``"raise"`` (default) or ``"warn"``: a failure inside an epoch warns and training
            goes on, the callback's state intact (single process; under DDP a failure raises, since a
            rank that skipped would leave the others waiting).
        output: which of the model's outputs is explained when it returns a tuple, dict or object: an
            index, a key or attribute name, or ``fn(outputs) -> (N,) or (N, classes)``.
        embedding, pad_id: for token ids, the dotted name of the ``nn.Embedding`` they are attributed
            at (default: the one that reads them) and the padding id (the baseline; left out of the
            summaries).

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> from lightning_xai import ProbeSet
        >>> from lightning_xai.callbacks import AttributionMonitor
        >>> probe = ProbeSet(torch.randn(8, 1, 8, 8), targets=torch.arange(8) % 4)
        >>> monitor = AttributionMonitor(probe, methods=["saliency", "grad_cam"], target="true",
        ...                              color_scale="fixed")
        >>> trainer = pl.Trainer(callbacks=[monitor], logger=False, enable_progress_bar=False)
        >>> AttributionMonitor(probe, color_scale="auto")
        Traceback (most recent call last):
        ...
        ValueError: color_scale must be 'fixed', 'grow', 'per_epoch' or a positive number (the maximum), got 'auto'
    """

    dashboard_categories = ("Attribution summaries",)

    #: samples per row of an image grid: 4 tiles of 64 px fit TensorBoard's image card unscaled,
    #: so captions stay readable without "show actual image size"
    GRID_COLUMNS = 4

    #: above this share of clipped pixels, a fixed colour scale warns once (per method)
    SATURATION_WARNING = 0.25

    def __init__(
        self,
        probe: Union[ProbeSet, ProbeSpec],
        methods: Union[MethodLike, Sequence[MethodLike], Mapping[Any, Mapping[str, Any]]] = ("saliency", "integrated_gradients"),
        target: TargetSpec = "predicted",
        every_n_epochs: int = 1,
        max_images: int = 16,
        chunk_size: Optional[int] = None,
        log_images: bool = True,
        color_scale: Union[str, float] = "grow",
        text_summary: bool = True,
        dtype: Union[str, torch.dtype] = "float32",
        on_error: str = "raise",
        renderer: Optional[Renderer] = None,
        output: F.OutputSpec = None,
        embedding: Optional[str] = None,
        pad_id: int = 0,
    ) -> None:
        super().__init__(
            probe, target=target, every_n_epochs=every_n_epochs, chunk_size=chunk_size, dtype=dtype, on_error=on_error,
            output=output, embedding=embedding, pad_id=pad_id,
        )
        self._calls = F.resolve_methods(methods)
        #: ``{method name: options}`` as configured (options checked against each method's signature)
        self.methods: Dict[str, Dict[str, Any]] = {m: dict(c.options) for m, c in self._calls.items()}
        if renderer is not None and not isinstance(renderer, Renderer):
            raise TypeError(
                "renderer needs accepts(probe) -> bool and render(attributions, ctx) -> HxWx3 uint8 array "
                f"(lightning_xai.renderers.Renderer); got {type(renderer).__name__}"
            )
        self.renderer = renderer
        if not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int, got {max_images!r}")
        self.max_images = max_images
        self.log_images = bool(log_images)
        self.color_scale = _check_color_scale(color_scale)
        self.text_summary = bool(text_summary)
        #: per method: the colour-scale maximum in use, the epoch it was set, whether maps are signed
        self._vmax: Dict[str, float] = {}
        self._vmax_epoch: Dict[str, int] = {}
        self._signed: Dict[str, bool] = {}
        self._clipped: Dict[str, float] = {}
        #: the last epoch's maps, ``{method: tensor}`` (on the model's device), for inspection
        self.last_attributions: Dict[str, Tensor] = {}

    def _state_key_fields(self) -> Dict[str, Any]:
        methods = sorted((m, repr(F.options_key(o))) for m, o in self.methods.items())
        return {**super()._state_key_fields(), "methods": methods}

    #: probes of several inputs: summaries per attributed input, ``xai/attr/<method>/<input>/<summary>``
    accepts_structured_probes = True

    def declared_metrics(self) -> Tuple[str, ...]:
        return tuple(rf"xai/attr/{re.escape(m)}/([^/]+/)?(gini|entropy|top10_mass)" for m in self.methods)

    def dashboard_charts(self) -> Dict[str, Dict[str, List[str]]]:
        methods = "|".join(re.escape(m) for m in self.methods)
        titles = {"gini": "gini (concentration)", "entropy": "entropy", "top10_mass": "top-10% mass"}
        return {"Attribution summaries": {title: [rf"xai/attr/({methods})/{stat}$"] for stat, title in titles.items()}}

    # ------------------------------------------------------------------ hooks
    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        super()._setup_checks(trainer, pl_module)
        if "grad_cam" in self.methods:
            F.resolve_layer(pl_module, self.methods["grad_cam"].get("layer"))
        self._try_methods(trainer, pl_module, self._calls)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_run(trainer):
            return
        maps = self._attributions(trainer, pl_module, self._calls)
        self.last_attributions = maps
        scalars: Dict[str, float] = {}
        padding = self._padding()  # token ids: padding left out of the summaries
        ids_key = self.probe.token_key() if isinstance(self.probe, ProbeSet) else None

        def valid(a: Tensor, key: Any = None) -> Optional[Tensor]:
            if padding is None or key != ids_key or tuple(a.shape) != tuple(padding.shape):
                return None
            return ~padding

        for method, attr in maps.items():
            if isinstance(attr, Tensor):
                for name, value in F.summarize(attr, valid(attr)).items():
                    scalars[f"xai/attr/{method}/{name}"] = value
                continue
            # several inputs: each attributed input's own summaries (their scales need not compare)
            for (key, part), label in zip(F.input_entries(attr), F.input_names(attr)):
                if part is not None:
                    for name, value in F.summarize(part, valid(part, key)).items():
                        scalars[f"xai/attr/{method}/{label}/{name}"] = value
        sink = self._sink(trainer)
        sink.scalars(scalars)
        if not trainer.is_global_zero:
            return
        if self.log_images:
            for method, attr in maps.items():
                image = self._render(trainer, pl_module, method, attr)
                if image is not None:
                    sink.image(f"xai/attr/{method}", image)
        if self.text_summary:
            sink.text(self._summary_tag(trainer), self._summary_markdown(trainer, scalars))
            for method, attr in maps.items():
                table = self._top_tokens_markdown(trainer, pl_module, method, attr)
                if table is not None:
                    sink.text(f"xai/attr/{method}/top_tokens", table)

    #: tokens listed per probe sample in the ``xai/attr/<method>/top_tokens`` table
    TOP_TOKENS = 5

    def _top_tokens_markdown(self, trainer: Any, pl_module: Any, method: str, attr: Any) -> Optional[str]:
        """For token ids: each probe sample's tokens of largest |attribution| (signed), padding left out."""
        probe = self.probe
        ids = probe.token_ids() if isinstance(probe, ProbeSet) else None
        if ids is None:
            return None
        key = probe.token_key()
        values = attr if key is None else dict(F.input_entries(attr)).get(key) if F.is_structured(attr) else None
        if not isinstance(values, Tensor) or tuple(values.shape) != tuple(ids.shape):
            return None
        n = min(self.max_images, len(probe))
        padding = self._padding()
        top = F.top_tokens(
            values[:n], [probe.tokens(i) for i in range(n)], None if padding is None else ~padding[:n], self.TOP_TOKENS
        )
        labels = self._labels(trainer, pl_module, n)
        rows = {
            f"{i}": {"label": labels[i] or "-", "top tokens (signed)": ", ".join(f"{t.replace('|', '&#124;')} ({v:+.3g})" for t, v in row) or "-"}
            for i, row in enumerate(top)
        }
        head = (
            f"**{method}: each probe sentence's {self.TOP_TOKENS} tokens of largest |attribution|, epoch "
            f"{trainer.current_epoch}** (step {trainer.global_step}; padding left out)"
        )
        return head + "\n\n" + markdown_table(rows, row_header="sample")

    def _summary_tag(self, trainer: Any) -> str:
        """``xai/attr/summary``; with several AttributionMonitors, ``xai/attr/summary/<k>`` for the k-th (from 1)."""
        monitors = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, AttributionMonitor)]
        if len(monitors) < 2:
            return "xai/attr/summary"
        return f"xai/attr/summary/{next(i for i, cb in enumerate(monitors, 1) if cb is self)}"

    def _summary_markdown(self, trainer: Any, scalars: Mapping[str, float]) -> str:
        rows: Dict[str, Dict[str, Any]] = {}
        for tag, value in scalars.items():
            method, name = tag[len("xai/attr/"):].rsplit("/", 1)
            rows.setdefault(method, {})[name] = value
        for method in rows:
            if self.log_images and method in self._vmax:
                rows[method]["colour max"] = self._vmax[method]
                rows[method]["clipped"] = f"{self._clipped.get(method, 0.0):.1%}"
        head = (
            f"**Attribution summaries, epoch {trainer.current_epoch}** (step {trainer.global_step}; "
            f"mean over {len(self.probe) if self.probe is not None else 0} probe samples; "
            f"target: {self.target if isinstance(self.target, (str, int)) else 'callable'})"
        )
        return head + "\n\n" + markdown_table(rows, row_header="method")

    # ------------------------------------------------------------------ colour scale
    @staticmethod
    def scale_key(method: str, part: Optional[str] = None) -> str:
        """The key a colour scale is kept under: the method, or ``method/input`` for one input of several
        (each input has its own units, so its own scale).

        Example:
            >>> AttributionMonitor.scale_key("saliency"), AttributionMonitor.scale_key("saliency", "input_ids")
            ('saliency', 'saliency/input_ids')
        """
        return method if part is None else f"{method}/{part}"

    def _scale(self, trainer: Any, method: str, values: Tensor, part: Optional[str] = None) -> float:
        """The colour-scale maximum for ``method`` (and input ``part``) this epoch (policy ``color_scale``), remembered."""
        key = self.scale_key(method, part)
        previous = self._vmax.get(key)
        vmax = F.next_color_scale(self.color_scale, previous, values)
        if previous is None or vmax != previous:
            self._vmax_epoch[key] = int(trainer.current_epoch)
        self._vmax[key] = vmax
        clipped = F.clipped_fraction(values, vmax)
        self._clipped[key] = clipped
        if self.color_scale == "fixed" and clipped > self.SATURATION_WARNING:
            self._warn_once(
                f"saturated-{key}",
                f"AttributionMonitor: the fixed colour scale of {key!r} (max {vmax:.3g}, set at epoch "
                f"{self._vmax_epoch[key]}) now clips {clipped:.0%} of the map, which saturates. Pass "
                "color_scale='grow' (raises the scale when outgrown), 'per_epoch', or a number.",
            )
        return vmax

    def _scale_legend(self, method: str, part: Optional[str] = None) -> str:
        method = self.scale_key(method, part)
        policy = self.color_scale
        since = self._vmax_epoch.get(method, 0)
        if policy == "fixed":
            text = f"colour scale fixed at epoch {since}"
        elif policy == "grow":
            text = f"colour scale set at epoch {since} (raised x1.41 when outgrown)"
        elif policy == "per_epoch":
            text = "colour scale of this epoch"
        else:
            text = "colour scale set by the user"
        return f"{text}; {self._clipped.get(method, 0.0):.1%} of values beyond it"

    # ------------------------------------------------------------------ rendering
    def _labels(self, trainer: Any, pl_module: Any, n: int) -> List[str]:
        assert self.probe is not None
        out = self._outputs(trainer, pl_module)
        pred = out.argmax(1).tolist() if out.dim() == 2 and out.shape[1] > 1 else None
        labels = []
        for i in range(n):
            parts = []
            if self.probe.targets is not None:
                y = self.probe.targets[i]
                parts.append(f"y={int(y)}" if y.dim() == 0 else "y={" + ",".join(str(c) for c in y.nonzero().flatten().tolist()) + "}")
            if pred is not None:
                parts.append(f"p={pred[i]}")
            labels.append("  ".join(parts))
        return labels

    def _mistakes(self, trainer: Any, pl_module: Any, n: int) -> Optional[List[bool]]:
        assert self.probe is not None
        out = self._outputs(trainer, pl_module)
        if self.probe.targets is None or self.probe.multilabel or out.dim() != 2 or out.shape[1] < 2:
            return None
        pred = out.argmax(1)[:n].cpu()
        return (pred != self.probe.targets[:n].to(pred.device).long()).tolist()

    def _render(self, trainer: Any, pl_module: Any, method: str, attr: Any) -> Optional[Any]:
        assert isinstance(self.probe, ProbeSet)
        renderer = self.renderer or renderer_for(self.probe)
        if renderer is None:
            self._warn_once(
                "kind",
                f"AttributionMonitor: no picture for probe inputs of shape "
                f"{F.map_tensors(lambda t: tuple(t.shape), self.probe.inputs)}; scalars are logged, images only for "
                "(N, C, H, W), (N, F), (N, C, T) and token-id probes, or several of them (or pass renderer=...)",
            )
            return None
        if self.probe.structured and isinstance(attr, Tensor) and self.renderer is None:
            self._warn_once(
                f"layer-{method}",
                f"AttributionMonitor: no picture for {method}'s maps of shape {tuple(attr.shape)}: they have a layer's "
                "resolution, and a probe of several inputs is drawn input by input (drop upsample=False for maps "
                "on the inputs that feed the layer); scalars are logged",
            )
            return None
        n = min(self.max_images, len(self.probe))
        # once a method's maps have been signed, keep the diverging colormap (colours stay comparable)
        parts = [a for _, a in F.input_entries(attr) if a is not None]
        self._signed[method] = self._signed.get(method, False) or any(F.is_signed(a) for a in parts)
        ctx = RenderContext(
            probe=self.probe, method=method, epoch=int(trainer.current_epoch), step=int(trainer.global_step),
            labels=self._labels(trainer, pl_module, n), mistakes=self._mistakes(trainer, pl_module, n),
            scale=lambda values, part=None: self._scale(trainer, method, values, part),
            describe_scale=lambda part=None: self._scale_legend(method, part), signed=self._signed[method],
            max_images=self.max_images, columns=self.GRID_COLUMNS, padding=self._padding(),
        )
        return renderer.render(attr, ctx)

    # ------------------------------------------------------------------ state
    _RUN_STATE = ("last_attributions", "_clipped")

    def state_dict(self) -> Dict[str, Any]:
        return {
            **self._probe_state(),
            "vmax": dict(self._vmax),
            "vmax_epoch": dict(self._vmax_epoch),
            "signed": dict(self._signed),
            "color_scale": self.color_scale,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
        self._vmax = {k: float(v) for k, v in state_dict.get("vmax", {}).items()}
        self._vmax_epoch = {k: int(v) for k, v in state_dict.get("vmax_epoch", {}).items()}
        self._signed = {k: bool(v) for k, v in state_dict.get("signed", {}).items()}


def _check_color_scale(value: Any) -> Union[str, float]:
    if isinstance(value, str) and value in F.COLOR_SCALE_POLICIES:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise ValueError(
        "color_scale must be 'fixed', 'grow', 'per_epoch' or a positive number (the maximum), "
        f"got {value!r}"
    )
