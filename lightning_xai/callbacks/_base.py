"""What every lightning_xai callback shares: probe handling, targets, the attribution cache, logging."""

from __future__ import annotations

import json
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import functional as F
from .._lightning import Callback, TensorBoardLogger, rank_zero_warn
from ..probe import ProbeSet, split_item
from ._cache import cache_for

__all__ = ["XAICallback", "normalize_methods", "TargetSpec"]

TargetSpec = Union[str, int, Callable[[Tensor, Optional[Tensor]], Tensor]]

_METHOD_OPTIONS = {
    "saliency": {"chunk_size"},
    "input_x_gradient": {"chunk_size"},
    "integrated_gradients": {"baseline", "n_steps", "method", "chunk_size"},
    "smoothgrad": {"n_samples", "noise", "seed", "chunk_size"},
    "grad_cam": {"layer", "upsample", "chunk_size"},
    "occlusion": {"window", "stride", "baseline", "chunk_size"},
}


def normalize_methods(methods: Union[str, Sequence[str], Mapping[str, Mapping[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """``"saliency"``, ``["saliency", ...]`` or ``{"integrated_gradients": {"n_steps": 64}}`` -> dict.

    Unknown method names and unknown options raise a ``ValueError`` that lists the known ones.
    """
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Mapping):
        items = [(k, dict(v or {})) for k, v in methods.items()]
    else:
        items = [(m, {}) for m in methods]
    if not items:
        raise ValueError(f"methods is empty: name at least one of {', '.join(F.METHODS)}")
    out: Dict[str, Dict[str, Any]] = {}
    for name, options in items:
        F.check_method(name)
        bad = set(options) - _METHOD_OPTIONS[name]
        if bad:
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(bad))} for {name!r}; it takes "
                f"{', '.join(sorted(_METHOD_OPTIONS[name]))}"
            )
        out[name] = options
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), float(value.double().sum()))
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class XAICallback(Callback):
    """Base of the lightning_xai callbacks (not used directly).

    Holds the probe, the target rule and ``every_n_epochs``; validates them against the model at
    ``setup``; computes attributions through the per-trainer cache; logs scalars through every
    Lightning logger and images to TensorBoard.
    """

    def __init__(
        self,
        probe: Optional[ProbeSet],
        *,
        target: TargetSpec = "predicted",
        every_n_epochs: int = 1,
        chunk_size: Optional[int] = None,
        probe_required: bool = True,
    ) -> None:
        super().__init__()
        if probe is None and probe_required:
            raise ValueError(f"{type(self).__name__} needs a probe: pass probe=ProbeSet.from_dataset(dataset, n=32)")
        if probe is not None and not isinstance(probe, ProbeSet):
            raise TypeError(
                f"probe must be a lightning_xai.ProbeSet, got {type(probe).__name__}; "
                "build one with ProbeSet(inputs, targets) or ProbeSet.from_dataset(dataset, n)"
            )
        if not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int >= 1, got {every_n_epochs!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self._check_target_spec(target, probe)
        self.probe = probe
        self.target = target
        self.every_n_epochs = every_n_epochs
        self.chunk_size = chunk_size
        self._warned: set = set()
        #: rows in the first training batch of the run (caps the automatic chunk size; 0: unknown)
        self._train_batch_size: Optional[int] = None

    # ------------------------------------------------------------------ identity and scheduling
    @property
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_fields())

    def _state_key_fields(self) -> Dict[str, Any]:
        return {"probe": None if self.probe is None else self.probe.fingerprint()}

    def _should_run(self, trainer: Any) -> bool:
        if trainer.sanity_checking:
            return False
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    # ------------------------------------------------------------------ targets
    @staticmethod
    def _check_target_spec(target: Any, probe: Optional[ProbeSet]) -> None:
        if isinstance(target, str):
            if target not in ("predicted", "true"):
                raise ValueError(
                    f"target must be 'predicted', 'true', a class index or a callable; got {target!r}"
                )
            if target == "true" and probe is not None and probe.targets is None:
                raise ValueError(
                    "target='true' needs a probe with targets: build it with ProbeSet(inputs, targets) "
                    "or from a dataset whose items carry labels"
                )
        elif isinstance(target, bool) or not (isinstance(target, int) or callable(target)):
            raise TypeError(f"target must be 'predicted', 'true', an int class index or a callable; got {target!r}")
        elif isinstance(target, int) and target < 0:
            raise ValueError(f"target class index must be >= 0, got {target}")

    def _check_against_model(self, pl_module: nn.Module) -> Optional[int]:
        """Run the probe through the model once (eval, no grad): shapes fit, targets in range.

        Returns the number of outputs per sample (classes), or None for single-output models.
        """
        probe = self.probe
        if probe is None:
            return None
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in pl_module.parameters()):
            return None  # lazy modules: initialising them here would consume the RNG
        x = probe.inputs_for(pl_module)[:2]
        try:
            with F.explaining(pl_module), torch.no_grad():
                out = pl_module(x)
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            raise ValueError(
                f"{type(self).__name__}: the probe's inputs of shape {tuple(probe.inputs.shape)} do not fit "
                f"{type(pl_module).__name__} ({type(err).__name__}: {err}). Build the ProbeSet from the "
                "same data (and transforms) the model is trained on."
            ) from err
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, Tensor) or out.dim() not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: {type(pl_module).__name__} returns "
                f"{type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)} for the probe; "
                "attributions need (N,) or (N, classes) outputs from forward()"
            )
        classes = out.shape[1] if out.dim() == 2 and out.shape[1] > 1 else None
        if classes is not None:
            bad: Optional[int] = None
            if isinstance(self.target, int) and not isinstance(self.target, bool) and self.target >= classes:
                bad = self.target
            elif self.target == "true" and probe.targets is not None:
                t = probe.targets
                if int(t.max()) >= classes or int(t.min()) < 0:
                    bad = int(t.max()) if int(t.max()) >= classes else int(t.min())
            if bad is not None:
                raise ValueError(
                    f"{type(self).__name__}: target class {bad} is out of range: "
                    f"{type(pl_module).__name__} returns {classes} classes (valid 0..{classes - 1})"
                )
        return classes

    def _outputs_key(self) -> Any:
        assert self.probe is not None
        return ("__outputs__", self.probe.fingerprint())

    def _outputs(self, trainer: Any, pl_module: nn.Module) -> Tensor:
        """The model's outputs on the probe this epoch (computed once per epoch, shared).

        When a gradient pass over the probe ran first this epoch, its forward already gave them.
        """
        assert self.probe is not None
        key = self._outputs_key()

        def compute() -> Tensor:
            x = self.probe.inputs_for(pl_module)  # type: ignore[union-attr]
            with F.explaining(pl_module), torch.no_grad():
                out = pl_module(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            return out.detach()

        return cache_for(trainer).get_or_compute(key, compute)

    def _resolve_target(self, trainer: Any, pl_module: nn.Module) -> Optional[Tensor]:
        assert self.probe is not None
        out = self._outputs(trainer, pl_module)
        if out.dim() == 1 or out.shape[1] == 1:
            return None
        if self.target == "predicted":
            return out.argmax(1)
        if self.target == "true":
            assert self.probe.targets is not None
            return self.probe.targets.to(out.device).long()
        if isinstance(self.target, int):
            return torch.full((out.shape[0],), self.target, dtype=torch.long, device=out.device)
        t = self.target(out, None if self.probe.targets is None else self.probe.targets.to(out.device))  # type: ignore[operator]
        t = torch.as_tensor(t, device=out.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(out.shape[0])
        if t.numel() != out.shape[0] or int(t.max()) >= out.shape[1] or int(t.min()) < 0:
            raise ValueError(
                f"the target callable returned {t.tolist()[:8]}...; it must return one class index in "
                f"0..{out.shape[1] - 1} per probe sample ({out.shape[0]})"
            )
        return t

    def _target_key(self) -> Any:
        return self.target if isinstance(self.target, (str, int)) else ("callable", id(self.target))

    # ------------------------------------------------------------------ attributions (cached)
    def _attributions(
        self, trainer: Any, pl_module: nn.Module, methods: Mapping[str, Mapping[str, Any]]
    ) -> Dict[str, Tensor]:
        """Attributions of the probe for each method, shared with other callbacks this epoch."""
        assert self.probe is not None
        cache = cache_for(trainer)
        fp = self.probe.fingerprint()
        x = self.probe.inputs_for(pl_module)

        def key(name: str, options: Mapping[str, Any]) -> Any:
            opts = {k: v for k, v in options.items() if k != "chunk_size"}
            return ("attr", name, _freeze(opts), fp, self._target_key(), str(x.dtype))

        result: Dict[str, Tensor] = {}
        missing = {m: o for m, o in methods.items() if key(m, o) not in cache}
        for m in methods:
            if m not in missing:
                result[m] = cache.get(key(m, methods[m]))
        # the one-pass methods share a single forward+backward
        shared = [m for m in missing if m in F.GRADIENT_PASS_METHODS]
        target: Optional[Tensor] = None
        if shared:
            cam_opts = missing.get("grad_cam", {})
            options = dict(
                layer=cam_opts.get("layer"), upsample=cam_opts.get("upsample", True),
                chunk_size=self._chunk(missing, len(x)),
            )
            if self.target == "predicted" and self._outputs_key() not in cache:
                # one forward for both: the pass's own outputs give the predicted class and are
                # kept as this epoch's probe outputs (no separate forward to resolve the target)
                maps, outputs = F.attribute_many(pl_module, x, "predicted", shared, return_outputs=True, **options)
                cache.put(self._outputs_key(), outputs)
            else:
                target = self._resolve_target(trainer, pl_module)
                maps = F.attribute_many(pl_module, x, target, shared, **options)
            for m in shared:
                cache.put(key(m, missing[m]), maps[m])
                cache.computed[m] += 1
                result[m] = maps[m]
        for m, options in missing.items():
            if m in shared:
                continue
            if target is None:
                target = self._resolve_target(trainer, pl_module)
            opts = dict(options)
            if opts.get("chunk_size") is None:
                opts["chunk_size"] = self._chunk({}, len(x))
            result[m] = F.attribute(pl_module, x, target, m, **opts)
            cache.put(key(m, options), result[m])
            cache.computed[m] += 1
        return {m: result[m] for m in methods}

    def _chunk(self, methods: Mapping[str, Mapping[str, Any]], n: int) -> Optional[int]:
        """Rows per pass: a method's ``chunk_size``, else the callback's, else automatic.

        Automatic: the probe size, capped at the training batch size seen in this run, so that an
        attribution pass (no parameter gradients, no optimizer state) never holds more activations
        than a training step does.
        """
        for o in methods.values():
            if o.get("chunk_size") is not None:
                return int(o["chunk_size"])
        if self.chunk_size is not None:
            return self.chunk_size
        if self._train_batch_size and self._train_batch_size < n:
            return self._train_batch_size
        return None

    # ------------------------------------------------------------------ logging
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _log_scalars(self, trainer: Any, metrics: Mapping[str, float]) -> None:
        """Scalars go to every logger and to ``trainer.callback_metrics`` (for EarlyStopping & co)."""
        if not metrics:
            return
        values = {k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)

    def _tensorboards(self, trainer: Any) -> List[Any]:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _log_image(self, trainer: Any, tag: str, image: np.ndarray) -> None:
        """An HxWx3 uint8 image to every TensorBoard logger (rank 0); one warning when there is none."""
        if not trainer.is_global_zero:
            return
        writers = self._tensorboards(trainer)
        if not writers:
            self._warn_once(
                "no-tensorboard",
                f"{type(self).__name__}: no TensorBoardLogger attached, so images such as {tag!r} are not "
                "logged (scalars still go to your loggers). Add pytorch_lightning.loggers.TensorBoardLogger.",
            )
            return
        summary = _image_summary(tag, image)
        for w in writers:
            get_writer = getattr(w, "_get_file_writer", None)
            if summary is None or get_writer is None:
                w.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
            else:
                get_writer().add_summary(summary, trainer.global_step)

    # ------------------------------------------------------------------ state
    def _probe_state(self) -> Dict[str, Any]:
        return {} if self.probe is None else {"probe": self.probe.state_dict()}

    def _check_probe_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("probe")
        if saved and self.probe is not None and saved.get("fingerprint") != self.probe.fingerprint():
            warnings.warn(
                f"{type(self).__name__}: the checkpoint was written with a different probe "
                f"(fingerprint {saved.get('fingerprint')}, indices {json.dumps(saved.get('indices'))[:60]}); "
                "values logged after resuming are not comparable with those before. Rebuild the probe with "
                "the same data, n and seed.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ hooks shared by all
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        cache_for(trainer).start_epoch()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._train_batch_size is None:
            try:
                self._train_batch_size = int(split_item(batch)[0].shape[0])
            except (ValueError, IndexError, TypeError, AttributeError):
                self._train_batch_size = 0  # unknown layout (0): keep the probe-size default


def _image_summary(tag: str, image: np.ndarray) -> Any:
    """A TensorBoard image summary of an HxWx3 uint8 array, PNG-encoded once with fast compression.

    ``SummaryWriter.add_image`` converts to float and back, resamples the image to its own size and
    PNG-encodes at the default (slow) zlib level; the picture is the same, encoded 3-4x faster here.
    Returns None when the protobuf or Pillow is unavailable (then ``add_image`` is used).
    """
    try:
        import io

        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    img = np.ascontiguousarray(image, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    height, width, channels = img.shape
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=buf.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])


def mean_over(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
