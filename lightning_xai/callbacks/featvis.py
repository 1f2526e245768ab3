"""``FeatureVisualizationMonitor``: what each class (and chosen units) looks like to the model, epoch by epoch."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import functional as F
from ..probe import ProbeSet, ProbeSpec, split_item
from ._base import XAICallback

__all__ = ["FeatureVisualizationMonitor"]


class FeatureVisualizationMonitor(XAICallback):
    """Activation maximisation of each class (and units) at each scheduled validation epoch.

    For every class (all of them by default) and every ``(layer, channel)`` unit, an input that
    maximises it is optimised from the same seeded start each epoch
    (:func:`lightning_xai.functional.activation_maximization`, regularisers after Olah et al. 2017)
    and logged as pictures (TensorBoard's *Images* tab; no scalars, so no dashboard section):

    - image inputs ``(C, H, W)``: ``xai/featvis/classes`` (one tile per class, captioned with the
      class and the logit it reaches), ``xai/featvis/<layer>`` (one tile per channel, with its mean
      activation), and ``xai/featvis/classes_by_epoch`` (one row per logged epoch, the last
      ``history`` of them: the pictures sharpening as the model learns, in one image). Every tile is
      drawn on the same fixed value range (the data's, from the probe or the first validation
      batch, kept in the checkpoint), so the same grey means the same value at every epoch;
    - tabular inputs ``(F,)``: one bar chart per class (or unit): each feature's value in the
      prototype, as its position in the probe's range of that feature (-1: its minimum, +1: its
      maximum; the raw value next to the name). Prototypes are kept inside that range (pixel
      parametrisation, clamped; jitter, blur and ``"fft"`` need spatial axes and are not used);
    - several floating inputs (a probe of a tuple or dict of tensors, e.g. an image and its metadata):
      optimised together, as one vector of every input's values (each kept inside its own input's
      range, as for tabular inputs), and drawn input by input as above under
      ``xai/featvis/classes/<input>`` and ``xai/featvis/<layer>/<input>`` (no ``classes_by_epoch``);
      models with integer inputs (token ids, masks) are refused, since those cannot be optimised
      and holding them at one sample's values would picture that sample, not the class;
    - ``xai/filters/<layer>``: the kernels of the first ``Conv2d`` layer (``filters=True``) or of the
      one named, on a colour scale set at the first epoch and raised by sqrt(2) when outgrown.

    Everything runs on rank 0 only, in eval mode with the parameters frozen: training is not
    perturbed (same weights, buffers and global RNG state, bit for bit, as without the callback).

    Args:
        classes: class indices to visualise (default: all the model's classes).
        units: ``(layer_name, channel)`` pairs: the channel's mean activation in that module's output.
        every_n_epochs: run on every n-th validation epoch.
        steps, lr, l2, jitter, blur, parametrization, seed: the optimisation, as
            :func:`~lightning_xai.functional.activation_maximization` takes them.
        probe: a :class:`~lightning_xai.ProbeSet` (or ``ProbeSpec``) giving the input shape and
            value range; optional: without one they come from the first validation batch (the
            class count is then checked there, or at setup from ``example_input_array``). Several
            inputs need a probe (their structure and ranges come from it).
        filters: ``True`` (the first ``Conv2d``, if any), ``False``, or a layer name.
        class_names: a caption per class index.
        history: epochs kept in ``xai/featvis/classes_by_epoch`` (0: not logged).
        on_error: ``"raise"`` (default) or ``"warn"``.

    Example:
        >>> from lightning_xai.callbacks import FeatureVisualizationMonitor
        >>> monitor = FeatureVisualizationMonitor(units=[("features.0", 3)], every_n_epochs=2, steps=64)
        >>> FeatureVisualizationMonitor(classes=[1, -2])
        Traceback (most recent call last):
        ...
        ValueError: a class index must be >= 0, got -2
    """

    #: it logs pictures only, no scalars: it adds no section to the custom-scalars dashboard
    #: ("Loss" is in every layout, so declaring it adds nothing)
    dashboard_categories = ("Loss",)

    def dashboard_charts(self) -> Dict[str, Dict[str, List[str]]]:
        return {}  # images only: no scalar chart

    GRID_COLUMNS = 10

    def __init__(
        self,
        classes: Optional[Sequence[int]] = None,
        units: Sequence[Tuple[str, int]] = (),
        every_n_epochs: int = 1,
        steps: int = 128,
        lr: float = 0.05,
        l2: float = 1e-3,
        jitter: int = 1,
        blur: float = 0.0,
        parametrization: str = "fft",
        seed: int = 0,
        probe: Union[None, ProbeSet, ProbeSpec] = None,
        filters: Union[bool, str] = True,
        class_names: Optional[Sequence[str]] = None,
        history: int = 8,
        on_error: str = "raise",
        output: F.OutputSpec = None,
    ) -> None:
        super().__init__(probe, every_n_epochs=every_n_epochs, probe_required=False, on_error=on_error, output=output)
        self.options = F.check_featvis_options(steps, lr, l2, jitter, blur, parametrization, seed)
        self.classes: Optional[List[int]] = None
        if classes is not None:
            resolved = F.resolve_featvis_targets([classes] if isinstance(classes, int) else list(classes))
            if any(isinstance(c, tuple) for c in resolved):
                raise TypeError(f"classes takes class indices; put (layer, channel) pairs in units=, got {classes!r}")
            self.classes = [c for c in resolved if isinstance(c, int)]
        self.units: List[Tuple[str, int]] = []
        if units:
            resolved = F.resolve_featvis_targets(list(units))
            if not all(isinstance(u, tuple) for u in resolved):
                raise TypeError(f"units takes (layer_name, channel) pairs; put class indices in classes=, got {units!r}")
            self.units = [u for u in resolved if isinstance(u, tuple)]
        if not isinstance(filters, (bool, str)) or filters == "":
            raise TypeError(f"filters must be True, False or a layer name, got {filters!r}")
        self.filters = filters
        self.class_names = list(class_names) if class_names is not None else None
        if not isinstance(history, int) or isinstance(history, bool) or history < 0:
            raise ValueError(f"history must be an int >= 0 (epochs shown in classes_by_epoch), got {history!r}")
        self.history = history
        self._shape: Optional[Tuple[int, ...]] = None
        self._range: Optional[Tuple[Tensor, Tensor]] = None
        self._num_classes: Optional[int] = None
        self._filter_vmax: Optional[float] = None
        self._filter_vmax_epoch = 0
        self._history: List[Tuple[int, Tensor]] = []
        #: the last epoch's pictures as tensors: ``{"classes": (K, *shape), layer: (U, *shape)}`` (CPU); for
        #: several inputs each value is in the inputs' structure (a tuple or dict of such tensors)
        self.last_images: Dict[str, Any] = {}
        if isinstance(probe, ProbeSet):
            self._on_probe_drawn()

    def _state_key_fields(self) -> Dict[str, Any]:
        return {**super()._state_key_fields(), "classes": self.classes, "units": self.units, **self.options}

    # ------------------------------------------------------------------ shape, range, checks
    #: a probe of several floating inputs is optimised jointly; integer inputs are refused (``_check_structured``)
    accepts_structured_probes = True

    def _check_structured(self, probe: Any) -> None:
        if isinstance(probe, ProbeSet) and probe.structured:
            self._refuse_integer_inputs(probe.inputs)

    @staticmethod
    def _refuse_integer_inputs(inputs: Any) -> None:
        names = F.input_names(inputs)
        riding = [n for n, (_, t) in zip(names, F.input_entries(inputs)) if not t.is_floating_point()]
        if riding:
            raise ValueError(
                f"FeatureVisualizationMonitor optimises the model's inputs for each class, but this model takes "
                f"integer inputs ({', '.join(riding)} of {', '.join(names)}: token ids, masks), which cannot be "
                "optimised, and holding them at one sample's values would picture that sample, not the class. "
                "Visualise a module that takes the floating inputs alone (e.g. the image branch), or explain this "
                "model with AttributionMonitor"
            )

    def _learn_inputs(self, x: Any) -> None:
        """Input shape and value range (per feature for ``(N, F)``, else one pair) from real inputs.

        Several inputs are one flat vector of their values (:func:`~lightning_xai.functional.joint_inputs`),
        each with its own input's range: per feature for ``(F,)`` inputs, else the input's one pair."""
        if F.is_structured(x):
            los, his = [], []
            for _, t in F.input_entries(x):
                t = t.detach().float().cpu()
                lo, hi = (t.min(0).values, t.max(0).values) if t.dim() == 2 else (t.min(), t.max())
                size = math.prod(t.shape[1:])
                los.append(torch.broadcast_to(lo, t.shape[1:]).reshape(size))
                his.append(torch.broadcast_to(hi, t.shape[1:]).reshape(size))
            low, high = torch.cat(los), torch.cat(his)
            self._shape = (int(low.numel()),)
            self._range = (low, torch.where(high > low, high, low + 1.0))
            return
        x = x.detach().float().cpu()
        self._shape = tuple(x.shape[1:])
        if x.dim() == 2:
            self._range = (x.min(0).values, x.max(0).values)
        else:
            self._range = (x.min().reshape(()), x.max().reshape(()))
        lo, hi = self._range
        # a constant feature (or image) still needs hi > lo
        self._range = (lo, torch.where(hi > lo, hi, lo + 1.0))

    def _on_probe_drawn(self) -> None:
        if self._shape is None:
            self._learn_inputs(self.probe.inputs)

    def _check_classes(self, count: Optional[int], model: nn.Module) -> None:
        self._num_classes = count
        if count is None or self.classes is None:
            return
        bad = [c for c in self.classes if c >= count]
        if bad:
            raise ValueError(
                f"FeatureVisualizationMonitor: class {bad[0]} is out of range: {type(model).__name__} returns "
                f"{count} classes (valid 0..{count - 1})"
            )

    def _class_count(self, model: nn.Module, x: Tensor) -> Optional[int]:
        with F.explaining(model), torch.no_grad():
            out = model(x[:2])
        out = F.select_model_output(out, self.output) if self.output is not None else out[0] if isinstance(out, (tuple, list)) else out
        return int(out.shape[1]) if isinstance(out, Tensor) and out.dim() == 2 else 1 if isinstance(out, Tensor) else None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # with a probe: _setup_checks (shape, class count)
        F.check_featvis_units(pl_module, self.units)
        self._filter_layer(pl_module)
        example = getattr(pl_module, "example_input_array", None)
        if self.probe is None and self._num_classes is None and isinstance(example, Tensor):
            self._check_classes(self._class_count(pl_module, example.to(next(pl_module.parameters()).device)), pl_module)

    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        self._check_classes(self._check_against_model(pl_module), pl_module)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._shape is not None and self._num_classes is not None:
            return
        x = split_item(batch)[0]
        if F.is_structured(x):  # only a batch of several inputs tells (no probe was given)
            self._refuse_integer_inputs(x)
        if self._shape is None:
            self._learn_inputs(x)
        if self._num_classes is None:
            self._check_classes(self._class_count(pl_module, x), pl_module)

    def _filter_layer(self, model: nn.Module) -> Optional[Tuple[str, nn.Conv2d]]:
        if self.filters is False:
            return None
        modules = dict(model.named_modules())
        if isinstance(self.filters, str):
            m = modules.get(self.filters)
            if not isinstance(m, nn.Conv2d):
                convs = [n for n, c in modules.items() if isinstance(c, nn.Conv2d)]
                raise ValueError(
                    f"FeatureVisualizationMonitor: filters={self.filters!r} is not a Conv2d layer of "
                    f"{type(model).__name__}; Conv2d layers: {', '.join(convs) or 'none'}"
                )
            return self.filters, m
        return next(((n, m) for n, m in modules.items() if isinstance(m, nn.Conv2d)), None)

    # ------------------------------------------------------------------ the epoch
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._should_run(trainer) or not trainer.is_global_zero:
            return
        sink = self._sink(trainer)
        epoch = int(trainer.current_epoch)
        layer = self._filter_layer(pl_module)
        if layer is not None:
            weight = layer[1].weight.detach()
            previous = self._filter_vmax
            self._filter_vmax = F.next_color_scale("grow", previous, weight)
            if previous is None or self._filter_vmax != previous:
                self._filter_vmax_epoch = epoch
            sink.image(f"xai/filters/{layer[0]}", F.filter_grid(
                weight, self._filter_vmax, columns=8, title=f"{layer[0]}: {weight.shape[0]} kernels, epoch {epoch}",
                legend=f"colour scale set at epoch {self._filter_vmax_epoch} (raised x1.41 when outgrown)",
            ))
        if self._shape is None or self._range is None:
            self._warn_once("no-shape", "FeatureVisualizationMonitor: no probe and no validation batch seen, so "
                            "the input shape is unknown; pass probe=ProbeSet(...)")
            return
        classes = self.classes if self.classes is not None else list(range(self._num_classes or 0))
        targets: List[Any] = [*classes, *self.units]
        if not targets:
            return
        tabular = len(self._shape) == 1
        options = dict(self.options, jitter=0, blur=0.0, parametrization="pixel") if tabular else self.options
        model = F.with_output(pl_module, self.output)  # class objectives read the selected output
        if isinstance(self.probe, ProbeSet) and self.probe.structured:
            self._joint(trainer, model, classes, targets, options, epoch)
            return
        x = F.activation_maximization(model, self._shape, targets, value_range=self._range, **options)
        scores = F.featvis_objective(model, x, targets).cpu().tolist()
        x = x.float().cpu()
        groups: Dict[str, List[int]] = {"classes": list(range(len(classes)))} if classes else {}
        for i, (name, _) in enumerate(self.units, len(classes)):
            groups.setdefault(name, []).append(i)
        self.last_images = {key: x[rows] for key, rows in groups.items()}
        if len(self._shape) not in (1, 3):
            self._warn_once("kind", f"FeatureVisualizationMonitor: no picture for inputs of shape {self._shape}; "
                            "pictures are drawn for (C, H, W) and (F,) inputs (last_images holds the tensors)")
            return
        for key, rows in groups.items():
            captions = [self._caption(targets[i], scores[i]) for i in rows]
            what = "class: logit reached" if key == "classes" else "channel: mean activation reached"
            title = f"{'classes' if key == 'classes' else key}, epoch {epoch} ({what})"
            image = self._bars(x[rows], captions, title) if tabular else F.image_grid(
                x[rows], self._value_range(), captions, columns=self.GRID_COLUMNS, title=title)
            sink.image(f"xai/featvis/{key}", image)
        if classes and not tabular and self.history:
            self._history = (self._history + [(epoch, self._quantise(x[: len(classes)]))])[-self.history:]
            sink.image("xai/featvis/classes_by_epoch", F.image_grid(
                torch.cat([h for _, h in self._history]).float(), (0.0, 255.0),
                labels=[self._caption(c) for c in classes] + [""] * (len(classes) * (len(self._history) - 1)),
                columns=len(classes), title="classes, one row per epoch", row_titles=[f"ep {e}" for e, _ in self._history],
            ))

    def _joint(
        self, trainer: Any, model: nn.Module, classes: List[int], targets: List[Any], options: Dict[str, Any], epoch: int
    ) -> None:
        """Several floating inputs, optimised together as one flat vector (each value within its input's
        range); each input drawn on its own: ``xai/featvis/<classes|layer>/<input>``."""
        assert isinstance(self.probe, ProbeSet) and self._shape is not None and self._range is not None
        flat, _, split = F.joint_inputs(model, self.probe.inputs)
        x = F.activation_maximization(flat, self._shape, targets, value_range=self._range, **options)
        scores = F.featvis_objective(flat, x, targets).cpu().tolist()
        x = x.float().cpu()
        lo, hi = split(self._range[0][None]), split(self._range[1][None])
        groups: Dict[str, List[int]] = {"classes": list(range(len(classes)))} if classes else {}
        for i, (name, _) in enumerate(self.units, len(classes)):
            groups.setdefault(name, []).append(i)
        self.last_images = {key: split(x[rows]) for key, rows in groups.items()}
        sink = self._sink(trainer)
        names = dict(zip([k for k, _ in F.input_entries(self.probe.inputs)], F.input_names(self.probe.inputs)))
        for key, rows in groups.items():
            captions = [self._caption(targets[i], scores[i]) for i in rows]
            what = "class: logit reached" if key == "classes" else "channel: mean activation reached"
            for k, part in F.input_entries(self.last_images[key]):
                title = f"{names[k]}: {'classes' if key == 'classes' else key}, epoch {epoch} ({what})"
                low, high = dict(F.input_entries(lo))[k][0], dict(F.input_entries(hi))[k][0]
                if part.dim() == 4:  # (C, H, W): one range for the input
                    image = F.image_grid(part, (float(low.min()), float(high.max())), captions,
                                         columns=self.GRID_COLUMNS, title=title)
                elif part.dim() == 2:  # (F,): each feature's place in its range
                    image = self._feature_bars(part, low, high, [f"f{i}" for i in range(part.shape[1])], captions, title)
                else:
                    self._warn_once(f"kind-{names[k]}", f"FeatureVisualizationMonitor: no picture for input {names[k]} "
                                    f"of shape {tuple(part.shape[1:])}; pictures are drawn for (C, H, W) and (F,) "
                                    "inputs (last_images holds the tensors)")
                    continue
                sink.image(f"xai/featvis/{key}/{names[k]}", image)

    def _caption(self, target: Any, score: Optional[float] = None) -> str:
        if isinstance(target, tuple):
            name = f"ch {target[1]}"
        else:
            name = self.class_names[target] if self.class_names and target < len(self.class_names) else str(target)
        return name if score is None else f"{name}: {score:.3g}"

    def _value_range(self) -> Tuple[float, float]:
        assert self._range is not None
        return float(self._range[0]), float(self._range[1])

    def _quantise(self, x: Tensor) -> Tensor:
        lo, hi = self._value_range()
        return ((x - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)

    def _bars(self, rows: Tensor, captions: List[str], title: str) -> np.ndarray:
        assert self._range is not None and self._shape is not None
        names = self.probe.names if isinstance(self.probe, ProbeSet) else [f"f{i}" for i in range(self._shape[0])]
        return self._feature_bars(rows, self._range[0], self._range[1], names, captions, title)

    @staticmethod
    def _feature_bars(
        rows: Tensor, lo: Tensor, hi: Tensor, names: List[str], captions: List[str], title: str
    ) -> np.ndarray:
        """One bar chart per row: each feature's place in ``[lo, hi]`` (-1 .. +1), its raw value by its name."""
        charts = []
        for row, caption in zip(rows, captions):
            position = 2 * (row - lo) / (hi - lo) - 1
            labels = [f"{n}={v:.3g}" for n, v in zip(names, row.tolist())]
            charts.append(F.bar_chart(position, labels, title=f"{caption}  ({title})", vmax=1.0))
        return np.concatenate(charts, axis=0)

    # ------------------------------------------------------------------ state
    _RUN_STATE = ("last_images",)

    def state_dict(self) -> Dict[str, Any]:
        return {
            **self._probe_state(),
            "input_shape": list(self._shape) if self._shape is not None else None,
            "value_range": [t.clone() for t in self._range] if self._range is not None else None,
            "num_classes": self._num_classes,
            "filter_vmax": self._filter_vmax,
            "filter_vmax_epoch": self._filter_vmax_epoch,
            "history": [(e, h.clone()) for e, h in self._history],
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._check_probe_state(state_dict)
        shape = state_dict.get("input_shape")
        self._shape = tuple(shape) if shape is not None else None
        rng = state_dict.get("value_range")
        self._range = (rng[0].clone(), rng[1].clone()) if rng is not None else None
        self._num_classes = state_dict.get("num_classes")
        self._filter_vmax = state_dict.get("filter_vmax")
        self._filter_vmax_epoch = int(state_dict.get("filter_vmax_epoch", 0))
        self._history = [(int(e), h.clone()) for e, h in state_dict.get("history", [])]
