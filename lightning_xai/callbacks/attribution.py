"""``AttributionMonitor``: attribution maps of a fixed probe set, logged at each validation epoch."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import functional as F
from ..probe import ProbeSet
from ._base import TargetSpec, XAICallback, normalize_methods

__all__ = ["AttributionMonitor"]


class AttributionMonitor(XAICallback):
    """Explain the model on a fixed probe set at the end of each validation epoch.

    For each method it logs, under ``xai/attr/<method>``:

    - image probes ``(N, C, H, W)``: a grid of the probe images with heatmap overlays (diverging
      colormap for signed maps), a colour scale fixed at the first logged epoch so that change is
      visible, captions with true (``y``) and predicted (``p``) class;
    - tabular probes ``(N, F)``: a bar chart of mean ``|attribution|`` per feature (feature names
      from the probe);
    - scalars ``xai/attr/<method>/gini``, ``/entropy`` and ``/top10_mass`` that summarise the maps
      (mean over the probe), through every Lightning logger and into ``trainer.callback_metrics``.

    The model is explained in eval mode with its parameters frozen; training is not perturbed
    (same weights, bit for bit, as without the callback). Runs in ``fit`` and in
    ``trainer.validate()`` (inference mode), never in the sanity check.

    Args:
        probe: the :class:`~lightning_xai.ProbeSet` to explain.
        methods: names from ``lightning_xai.functional.METHODS``, or a mapping from name to options,
            e.g. ``{"integrated_gradients": {"n_steps": 64}, "grad_cam": {"layer": "conv2"}}``.
            ``saliency``, ``input_x_gradient`` and ``grad_cam`` share one forward+backward pass.
        target: ``"predicted"`` (default), ``"true"`` (probe targets), a class index, or a callable
            ``fn(outputs, targets) -> class indices``.
        every_n_epochs: run on every n-th validation epoch.
        max_images: at most this many probe samples in an image grid.
        chunk_size: rows per forward+backward pass (default: the probe size, capped at the size of
            the training batches, so that explaining never needs more memory than a training step).
        log_images: set False to log only the scalars.

    Example:
        >>> import torch, pytorch_lightning as pl
        >>> from lightning_xai import ProbeSet
        >>> from lightning_xai.callbacks import AttributionMonitor
        >>> probe = ProbeSet(torch.randn(8, 1, 8, 8), targets=torch.arange(8) % 4)
        >>> monitor = AttributionMonitor(probe, methods=["saliency", "grad_cam"], target="true")
        >>> trainer = pl.Trainer(callbacks=[monitor], logger=False, enable_progress_bar=False)
    """

    def __init__(
        self,
        probe: ProbeSet,
        methods: Union[str, Sequence[str], Mapping[str, Mapping[str, Any]]] = ("saliency", "integrated_gradients"),
        target: TargetSpec = "predicted",
        every_n_epochs: int = 1,
        max_images: int = 16,
        chunk_size: Optional[int] = None,
        log_images: bool = True,
    ) -> None:
        super().__init__(probe, target=target, every_n_epochs=every_n_epochs, chunk_size=chunk_size)
        self.methods = normalize_methods(methods)
        if not isinstance(max_images, int) or max_images < 1:
            raise ValueError(f"max_images must be a positive int, got {max_images!r}")
        self.max_images = max_images
        self.log_images = bool(log_images)
        self._vmax: Dict[str, float] = {}
        #: the last epoch's maps, ``{method: tensor}`` (on the model's device), for inspection
        self.last_attributions: Dict[str, Tensor] = {}

    def _state_key_fields(self) -> Dict[str, Any]:
        return {**super()._state_key_fields(), "methods": sorted(self.methods)}

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._check_against_model(pl_module)
        if "grad_cam" in self.methods:
            F.resolve_layer(pl_module, self.methods["grad_cam"].get("layer"))

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_run(trainer):
            return
        maps = self._attributions(trainer, pl_module, self.methods)
        self.last_attributions = maps
        scalars: Dict[str, float] = {}
        for method, attr in maps.items():
            for name, value in F.summarize(attr).items():
                scalars[f"xai/attr/{method}/{name}"] = value
        self._log_scalars(trainer, scalars)
        if self.log_images and trainer.is_global_zero:
            for method, attr in maps.items():
                image = self._render(trainer, pl_module, method, attr)
                if image is not None:
                    self._log_image(trainer, f"xai/attr/{method}", image)

    # ------------------------------------------------------------------ rendering
    def _labels(self, trainer: Any, pl_module: Any, n: int) -> List[str]:
        assert self.probe is not None
        out = self._outputs(trainer, pl_module)
        pred = out.argmax(1).tolist() if out.dim() == 2 and out.shape[1] > 1 else None
        labels = []
        for i in range(n):
            parts = []
            if self.probe.targets is not None:
                parts.append(f"y={int(self.probe.targets[i])}")
            if pred is not None:
                parts.append(f"p={pred[i]}")
            labels.append(" ".join(parts))
        return labels

    def _render(self, trainer: Any, pl_module: Any, method: str, attr: Tensor) -> Optional[Any]:
        assert self.probe is not None
        kind = self.probe.kind
        if kind == "image":
            n = min(self.max_images, len(self.probe))
            a = attr[:n].detach().float().cpu()
            if method not in self._vmax:
                self._vmax[method] = F.color_scale(a.sum(1))
            return F.overlay_grid(
                self.probe.inputs[:n],
                a,
                vmax=self._vmax[method],
                signed=F.is_signed(attr),
                labels=self._labels(trainer, pl_module, n),
                title=f"{method} (epoch {trainer.current_epoch})",
            )
        if kind == "tabular":
            importance = F.global_importance(attr.float().cpu())
            return F.bar_chart(
                importance, self.probe.names, title=f"mean |{method}| per feature (epoch {trainer.current_epoch})"
            )
        self._warn_once(
            "kind",
            f"AttributionMonitor: no picture for probe inputs of shape {tuple(self.probe.inputs.shape)}; "
            "scalars are logged, images only for (N, C, H, W) and (N, F) probes",
        )
        return None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        return {**self._probe_state(), "vmax": dict(self._vmax)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
        self._vmax = dict(state_dict.get("vmax", {}))
