"""What every lightning_xai callback shares: probe handling, targets, the attribution cache, logging."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import functional as F
from .._lightning import Callback, TensorBoardLoggers, rank_zero_warn
from ..errors import SanityCheckError
from ..probe import ProbeSet, ProbeSpec, split_item
from ._cache import cache_for
from ._dashboard import ensure_layout, log_text, tensorboard_writers

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
        if not (isinstance(name, str) and name in F.METHODS):
            from ..functional.captum_bridge import captum_class

            cls = captum_class(name)
            if cls is not None:  # any Captum attribution class, by class or by name
                out[cls.__name__] = options
                continue
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
        import hashlib

        data = value.detach().cpu().contiguous()
        digest = hashlib.sha1(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"").hexdigest()
        return ("tensor", tuple(value.shape), str(value.dtype), digest)
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

    The first lightning_xai callback of a run to start (``on_fit_start`` or ``on_validation_start``)
    writes the custom-scalars dashboard layout to each TensorBoard logger, once per log directory
    (:func:`lightning_xai.callbacks._dashboard.ensure_layout`). Subclasses say which of its categories
    they fill in ``dashboard_categories``; subclasses that override these hooks call ``super()``.
    """

    #: hooks whose failures ``on_error="warn"`` turns into a warning (set-up errors always raise)
    _GUARDED_HOOKS = (
        "on_validation_epoch_start", "on_validation_epoch_end", "on_validation_batch_start",
        "on_validation_batch_end", "on_train_epoch_end",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._GUARDED_HOOKS:
            hook = cls.__dict__.get(name)
            if hook is not None and not getattr(hook, "_xai_guarded", False):
                setattr(cls, name, _guard_hook(hook))

    #: the categories of the custom-scalars dashboard (``_dashboard.CATEGORIES``) this callback fills;
    #: empty means "not declared", and then the dashboard gets every category
    dashboard_categories: Tuple[str, ...] = ()

    def __init__(
        self,
        probe: Union[None, ProbeSet, ProbeSpec],
        *,
        target: TargetSpec = "predicted",
        every_n_epochs: int = 1,
        chunk_size: Optional[int] = None,
        probe_required: bool = True,
        on_error: str = "raise",
        dtype: Union[str, torch.dtype] = "float32",
    ) -> None:
        super().__init__()
        if probe is None and probe_required:
            raise ValueError(
                f"{type(self).__name__} needs a probe: pass probe=ProbeSet.from_dataset(dataset, n=32) "
                "or probe=ProbeSpec(n=32) to draw it from the validation data"
            )
        if probe is not None and not isinstance(probe, (ProbeSet, ProbeSpec)):
            raise TypeError(
                f"probe must be a lightning_xai.ProbeSet (or ProbeSpec), got {type(probe).__name__}; "
                "build one with ProbeSet(inputs, targets) or ProbeSet.from_dataset(dataset, n)"
            )
        if not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int >= 1, got {every_n_epochs!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
        self._check_target_spec(target, probe if isinstance(probe, ProbeSet) else None)
        self.probe: Any = probe
        self.target = target
        self.every_n_epochs = every_n_epochs
        self.chunk_size = chunk_size
        self.on_error = on_error
        self.dtype = _attribution_dtype(dtype)
        #: the chunk size in use: ``chunk_size``, halved after an out-of-memory error
        self._chunk_size: Optional[int] = chunk_size
        self._warned: set = set()
        #: the probe part of ``state_key``, fixed at construction: a ``ProbeSpec`` keeps its key once drawn,
        #: so a checkpoint written after the draw loads into a callback that has not drawn yet
        self._probe_key: Optional[str] = (
            repr(probe) if isinstance(probe, ProbeSpec) else None if probe is None else probe.fingerprint()
        )
        #: the probe state of a checkpoint loaded before a ``ProbeSpec`` was drawn (compared once drawn)
        self._pending_probe_state: Optional[Mapping[str, Any]] = None
        #: rows in the first training batch of the run (caps the automatic chunk size; 0: unknown)
        self._train_batch_size: Optional[int] = None

    # ------------------------------------------------------------------ identity and scheduling
    @property
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_fields())

    def _state_key_fields(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"target": self._target_key(), "dtype": str(self.dtype).replace("torch.", "")}
        return {"probe": self._probe_key, **fields}

    @property
    def probe_ready(self) -> bool:
        """True once the callback holds a :class:`ProbeSet` (a ``ProbeSpec`` is drawn at setup or later)."""
        return isinstance(self.probe, ProbeSet)

    # ------------------------------------------------------------------ probe specs (YAML)
    def _resolve_probe_spec(self, trainer: Any, pl_module: Any, stage: Optional[str] = None) -> bool:
        """Draw a ``ProbeSpec`` probe from the datamodule or module loaders; True once a ProbeSet is held."""
        spec = self.probe
        if not isinstance(spec, ProbeSpec):
            return spec is not None
        hook = f"{spec.source}_dataloader"
        loader = None
        # at setup only a datamodule (set up before the callbacks); the module's own loader hooks may
        # need its setup(), which runs after the callbacks', so they are asked when validation starts
        owners = (getattr(trainer, "datamodule", None),) if stage is not None else (getattr(trainer, "datamodule", None), pl_module)
        for owner in owners:
            if owner is not None and _is_overridden(owner, hook):
                loader = getattr(owner, hook)()
                break
        if loader is None:  # loaders passed straight to fit/validate: known once the loop starts
            attr = {"train": "train_dataloader", "val": "val_dataloaders", "test": "test_dataloaders"}[spec.source]
            loader = getattr(trainer, attr, None)
        if loader is None:
            return False
        self.probe = spec.build_from(loader)
        self._check_target_spec(self.target, self.probe)
        self._on_probe_drawn()
        if self._pending_probe_state is not None:
            pending, self._pending_probe_state = self._pending_probe_state, None
            self._check_probe_state({"probe": pending})
        return True

    def _on_probe_drawn(self) -> None:
        """Called once a ``ProbeSpec`` became a ``ProbeSet``: subclasses derive what depends on the probe."""

    def _should_run(self, trainer: Any) -> bool:
        if trainer.sanity_checking:
            return False
        if isinstance(self.probe, ProbeSpec):
            raise ValueError(
                f"{type(self).__name__}: {self.probe!r} could not be drawn: no {self.probe.source} dataloader was "
                "found (datamodule, LightningModule hook or loaders passed to fit/validate). Pass a ProbeSet, "
                "or a ProbeSpec whose source the run has."
            )
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

    def _probe_fits(self, pl_module: nn.Module, fix: str = "") -> Any:
        """The model's output on two probe samples (eval, no grad), or a ValueError naming the fix.

        None when there is no probe yet, or the model has lazy modules (a forward here would
        initialise them and consume the RNG).
        """
        probe = self.probe
        if not isinstance(probe, ProbeSet):
            return None
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in pl_module.parameters()):
            return None
        try:
            with F.explaining(pl_module), torch.no_grad():
                return pl_module(probe.inputs_for(pl_module)[:2])
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            raise ValueError(
                f"{type(self).__name__}: the probe's inputs of shape {tuple(probe.inputs.shape)} do not fit "
                f"{type(pl_module).__name__} ({type(err).__name__}: {err}). Build the ProbeSet from the "
                f"same data (and transforms) the model is trained on{fix}."
            ) from err

    def _check_against_model(self, pl_module: nn.Module) -> Optional[int]:
        """Run the probe through the model once (eval, no grad): shapes fit, targets in range.

        Returns the number of outputs per sample (classes), or None for single-output models.
        """
        probe = self.probe
        out = self._probe_fits(pl_module)
        if out is None:
            return None
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, Tensor) or out.dim() not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: {type(pl_module).__name__} returns "
                f"{type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)} for the probe; "
                "attributions need (N,) or (N, classes) outputs from forward()"
            )
        classes = out.shape[1] if out.dim() == 2 and out.shape[1] > 1 else None
        if classes is None and (self.target == "true" or (isinstance(self.target, int) and not isinstance(self.target, bool))):
            raise ValueError(
                f"{type(self).__name__}: target={self.target!r} picks a class, but {type(pl_module).__name__} returns "
                "one output per sample; use target='predicted' (the single output is explained)"
            )
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
        return ("__outputs__", self.probe.fingerprint(), str(self.dtype))

    def _outputs(self, trainer: Any, pl_module: nn.Module) -> Tensor:
        """The model's outputs on the probe this epoch (computed once per epoch, shared).

        When a gradient pass over the probe ran first this epoch, its forward already gave them.
        """
        assert self.probe is not None
        key = self._outputs_key()

        cache = cache_for(trainer)

        def compute() -> Tensor:
            x = self.probe.inputs_for(pl_module)  # type: ignore[union-attr]
            # callbacks that only watch the forward (DeadReLUMonitor) ride on this one pass
            taps = cache.taps_for(key[1])

            def attempt(c: int) -> Tuple[Tensor, List[Tuple[Any, Any]]]:
                with ExitStack() as stack:  # fresh watchers for each attempt: a retry never double-counts
                    watchers = [(k, stack.enter_context(factory(pl_module))) for k, factory in taps]
                    out = torch.cat([_first(pl_module(x[s : s + c])) for s in range(0, x.shape[0], c)])
                return out, watchers

            # in the callback's dtype (the key says which), wherever this is first asked for
            with F.computing_in(pl_module, self.dtype, x.device.type) as in_dtype, F.explaining(pl_module), torch.no_grad():
                if x.is_floating_point():
                    x = x.to(in_dtype)
                (out, watchers), self._chunk_size = self._with_oom_retry(attempt, self._chunk_size, x.shape[0])
            for k, watcher in watchers:
                cache.put(k, watcher)
            return out.detach()

        return cache.get_or_compute(key, compute)

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
        if isinstance(self.target, (str, int)):
            return self.target
        fn = self.target
        return ("callable", getattr(fn, "__module__", ""), getattr(fn, "__qualname__", type(fn).__qualname__))

    # ------------------------------------------------------------------ attributions (cached)
    def _attributions(
        self, trainer: Any, pl_module: nn.Module, methods: Mapping[str, Mapping[str, Any]]
    ) -> Dict[str, Tensor]:
        """Attributions of the probe for each method, shared with other callbacks this epoch.

        Under DDP the probe is sharded: each rank explains its contiguous share and the shares are
        gathered, so every rank holds the whole result and per-rank cost falls with world size.
        An out-of-memory error halves the chunk size and retries.
        """
        assert self.probe is not None
        cache = cache_for(trainer)
        fp = self.probe.fingerprint()

        def key(name: str, options: Mapping[str, Any]) -> Any:
            opts = {k: v for k, v in options.items() if k != "chunk_size"}
            return ("attr", name, _freeze(opts), fp, self._target_key(), str(self.dtype))

        result: Dict[str, Tensor] = {}
        missing = {m: o for m, o in methods.items() if key(m, o) not in cache}
        for m in methods:
            if m not in missing:
                result[m] = cache.get(key(m, methods[m]))
        if not missing:
            return {m: result[m] for m in methods}
        x = self.probe.inputs_for(pl_module)
        with F.computing_in(pl_module, self.dtype, x.device.type) as in_dtype:
            if x.is_floating_point():
                x = x.to(in_dtype)
            self._compute_missing(trainer, pl_module, x, missing, key, result)
        return {m: result[m] for m in methods}

    def _compute_missing(
        self, trainer: Any, pl_module: nn.Module, x: Tensor,
        missing: Mapping[str, Mapping[str, Any]], key: Callable[..., Any], result: Dict[str, Tensor],
    ) -> None:
        cache = cache_for(trainer)
        n = x.shape[0]
        world = max(1, int(trainer.world_size))
        start, stop = _shard_bounds(n, world, trainer.global_rank)
        per = -(-n // world)
        rows = slice(start, stop) if stop > start else slice(0, 1)  # an empty shard computes one row, dropped
        xs = x[rows]
        target: Optional[Tensor] = None

        def shard_target() -> Optional[Tensor]:
            nonlocal target
            if target is None:
                target = self._resolve_target(trainer, pl_module)
            return None if target is None else target[rows]

        def gather(maps: Dict[str, Tensor]) -> Dict[str, Tensor]:
            if world <= 1:
                return maps
            out = {}
            for m, a in maps.items():
                a = a if stop > start else a[:0]
                pad = torch.zeros((per - a.shape[0],) + tuple(a.shape[1:]), dtype=a.dtype, device=a.device)
                full = trainer.strategy.all_gather(torch.cat([a, pad]))
                out[m] = full.reshape((-1,) + tuple(a.shape[1:]))[:n]
            return out

        # the one-pass methods share a single forward+backward
        shared = [m for m in missing if m in F.GRADIENT_PASS_METHODS]
        if shared:
            cam_opts = missing.get("grad_cam", {})
            options = dict(layer=cam_opts.get("layer"), upsample=cam_opts.get("upsample", True))
            if self.target == "predicted" and world == 1 and self._outputs_key() not in cache:
                # one forward for both: the pass's own outputs give the predicted class and are
                # kept as this epoch's probe outputs (no separate forward to resolve the target);
                # callbacks that watch the probe forward (taps) watch this one
                # (not with Grad-CAM: a layer followed by an in-place op makes it run the forward again)
                taps = cache.taps_for(self.probe.fingerprint()) if "grad_cam" not in shared else []

                def attempt(c: int) -> Any:
                    with ExitStack() as stack:  # fresh watchers for each attempt: a retry never double-counts
                        watchers = [(k, stack.enter_context(factory(pl_module))) for k, factory in taps]
                        out = F.attribute_many(
                            pl_module, xs, "predicted", shared, return_outputs=True, chunk_size=c, **options
                        )
                    return out, watchers

                ((maps, outputs), watchers), self._chunk_size = self._with_oom_retry(
                    attempt, self._chunk(missing, n), n
                )
                cache.put(self._outputs_key(), outputs)
                for k, watcher in watchers:
                    cache.put(k, watcher)
            else:
                ts = shard_target()
                maps, self._chunk_size = self._with_oom_retry(
                    lambda c: F.attribute_many(pl_module, xs, ts, shared, chunk_size=c, **options),
                    self._chunk(missing, n), xs.shape[0],
                )
            for m, a in gather(maps).items():
                cache.put(key(m, missing[m]), a)
                cache.computed[m] += 1
                result[m] = a
        for m, options in missing.items():
            if m in shared:
                continue
            ts = shard_target()
            opts = dict(options)
            chunk = opts.pop("chunk_size", None) or self._chunk({}, n)
            if m == "smoothgrad":
                opts["shard"] = (rows.start, n)
            a, self._chunk_size = self._with_oom_retry(
                lambda c: _method(m)(pl_module, xs, ts, chunk_size=c, **opts), chunk, xs.shape[0]
            )
            result[m] = gather({m: a})[m]
            cache.put(key(m, options), result[m])
            cache.computed[m] += 1

    def _with_oom_retry(self, fn: Callable[[int], Any], chunk: Optional[int], rows: int) -> Tuple[Any, Optional[int]]:
        """``F.with_oom_retry``; a chunk size that had to be halved is kept for the next passes."""
        result, used = F.with_oom_retry(fn, chunk, rows)
        if used >= (chunk or rows):
            return result, self._chunk_size
        return result, used if self._chunk_size is None else min(self._chunk_size, used)

    def _chunk(self, methods: Mapping[str, Mapping[str, Any]], n: int) -> Optional[int]:
        """Rows per pass: a method's ``chunk_size``, else the callback's (halved after an out-of-memory
        error), else automatic.

        Automatic: the probe size, capped at the training batch size seen in this run, so that an
        attribution pass (no parameter gradients, no optimizer state) never holds more activations
        than a training step does.
        """
        for o in methods.values():
            if o.get("chunk_size") is not None:
                return int(o["chunk_size"])
        if self._chunk_size is not None:
            return self._chunk_size
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
        return tensorboard_writers(trainer)

    def _log_image(self, trainer: Any, tag: str, image: np.ndarray) -> None:
        """An HxWx3 uint8 image to every TensorBoard logger (rank 0); one warning when there is none."""
        if not trainer.is_global_zero:
            return
        writers = self._tensorboards(trainer)
        summary = _image_summary(tag, image) if writers else None  # PNG-encoded once for all writers
        for w in writers:
            get_writer = getattr(w, "_get_file_writer", None)
            if summary is None or get_writer is None:
                w.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
            else:
                get_writer().add_summary(summary, trainer.global_step)
        others = [lg for lg in trainer.loggers if not isinstance(lg, TensorBoardLoggers)]
        if writers and not others:
            return
        # loggers that take no images (CSV, MLflow-style, none at all): PNG files under the run's log dir
        root = _png_dir(trainer, others)
        if root is None:
            self._warn_once(
                "no-image-sink",
                f"{type(self).__name__}: no TensorBoardLogger and no log directory, so images such as {tag!r} "
                "are skipped (scalars still go to your loggers). Add a TensorBoardLogger to see them.",
            )
            return
        path = os.path.join(root, *tag.split("/")[:-1], f"{tag.split('/')[-1]}_step{trainer.global_step:06d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _save_png(image, path)
        self._warn_once(
            "png-images",
            f"{type(self).__name__}: images such as {tag!r} are written as PNG files under {root} for the "
            "loggers that take no images.",
        )

    def _log_text(self, trainer: Any, tag: str, markdown: str) -> None:
        """Markdown to every TensorBoard logger's *Text* tab (rank 0); one warning when there is none."""
        if trainer.is_global_zero and log_text(trainer, tag, markdown) == 0:
            self._warn_no_tensorboard(tag)

    def _warn_no_tensorboard(self, tag: str) -> None:
        self._warn_once(
            "no-tensorboard",
            f"{type(self).__name__}: no TensorBoardLogger attached, so images and text such as {tag!r} are "
            "not logged (scalars still go to your loggers). Add pytorch_lightning.loggers.TensorBoardLogger.",
        )

    # ------------------------------------------------------------------ state
    #: attributes outside the checkpoint state that an epoch updates (``last_*`` results): restored
    #: with it when a hook fails midway
    _RUN_STATE: Tuple[str, ...] = ()

    def _snapshot(self) -> Any:
        """The state that ``on_error="warn"`` restores when an epoch-level hook fails midway.

        Default: a deep copy of :meth:`state_dict` (restored by :meth:`load_state_dict`) and shallow
        copies of the ``_RUN_STATE`` attributes; callbacks whose state needs more override both methods.
        """
        import copy

        run = {name: copy.copy(getattr(self, name)) for name in self._RUN_STATE if hasattr(self, name)}
        return copy.deepcopy(self.state_dict()), run

    def _restore(self, snapshot: Any) -> None:
        state, run = snapshot
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same state again: nothing new to warn about
            self.load_state_dict(state)
        for name, value in run.items():
            setattr(self, name, value)

    def _probe_state(self) -> Dict[str, Any]:
        if isinstance(self.probe, ProbeSet):
            return {"probe": self.probe.state_dict()}
        return {} if self._pending_probe_state is None else {"probe": dict(self._pending_probe_state)}

    def _check_probe_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("probe")
        if saved and isinstance(self.probe, ProbeSpec):
            self._pending_probe_state = dict(saved)  # compared when the spec is drawn
            return
        if saved and self.probe is not None and saved.get("fingerprint") != self.probe.fingerprint():
            warnings.warn(
                f"{type(self).__name__}: the checkpoint was written with a different probe "
                f"(fingerprint {saved.get('fingerprint')}, indices {json.dumps(saved.get('indices'))[:60]}); "
                "values logged after resuming are not comparable with those before. Rebuild the probe with "
                "the same data, n and seed.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ hooks shared by all
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._resolve_probe_spec(trainer, pl_module, stage):
            self._setup_checks(trainer, pl_module)

    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        """Validate the configuration against the model (subclasses extend it); raises at setup."""
        self._check_against_model(pl_module)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        ensure_layout(trainer)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        ensure_layout(trainer)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._train_batch_size is None:
            try:
                self._train_batch_size = int(split_item(batch)[0].shape[0])
            except (ValueError, IndexError, TypeError, AttributeError):
                self._train_batch_size = 0  # unknown layout (0): keep the probe-size default

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        cache_for(trainer).start_epoch()
        if isinstance(self.probe, ProbeSpec) and self._resolve_probe_spec(trainer, pl_module):
            self._setup_checks(trainer, pl_module)


def _first(out: Any) -> Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _png_dir(trainer: Any, loggers: Sequence[Any]) -> Optional[str]:
    """Where PNG images go for loggers that take none: ``<log_dir>/xai_images`` (None when unknown)."""
    for lg in loggers:
        d = getattr(lg, "log_dir", None)
        if isinstance(d, str) and d:
            return os.path.join(d, "xai_images")
    d = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None)
    return os.path.join(d, "xai_images") if d else None


def _save_png(image: np.ndarray, path: str) -> None:
    with open(path, "wb") as f:
        f.write(F.png_bytes(image, level=6))  # files on disk: smaller rather than faster


def _attribution_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "32": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "16": torch.float16, "float64": torch.float64, "fp64": torch.float64, "64": torch.float64}
    if isinstance(dtype, torch.dtype) and dtype in names.values():
        return dtype
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    raise ValueError(
        f"dtype must be one of 'float32' (default), 'bfloat16', 'float16', 'float64' or a torch dtype; got {dtype!r}"
    )


def _is_overridden(owner: Any, hook: str) -> bool:
    """Whether a datamodule/LightningModule defines ``hook`` itself (the base classes raise in it)."""
    for klass in type(owner).__mro__:
        if hook in klass.__dict__:
            return klass.__module__.split(".")[0] not in ("pytorch_lightning", "lightning")
    return False


#: guarded hooks that update a callback's state (history, colour scales, patience): a failure in
#: them restores the state they started from
_SNAPSHOT_HOOKS = ("on_validation_epoch_end", "on_train_epoch_end")


def _guard_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a hook so that with ``on_error="warn"`` a failure warns and training goes on."""
    import functools

    @functools.wraps(hook)
    def guarded(self: "XAICallback", trainer: Any, *args: Any, **kwargs: Any) -> Any:
        if self.on_error == "raise" or getattr(trainer, "world_size", 1) > 1:
            # under DDP a rank that skipped would leave the others waiting in a collective: raise
            return hook(self, trainer, *args, **kwargs)
        # an epoch-level hook that fails midway leaves the callback as it was before the hook
        snapshot = None
        try:
            if hook.__name__ in _SNAPSHOT_HOOKS:
                snapshot = self._snapshot()
            return hook(self, trainer, *args, **kwargs)
        except SanityCheckError:
            raise  # the gate's decision is not an error of the callback
        except Exception as err:  # noqa: BLE001 - on_error="warn" is the user's choice
            restored = ""
            if snapshot is not None:
                try:
                    self._restore(snapshot)
                except Exception as again:  # noqa: BLE001 - report both, keep training as asked
                    restored = f" (its state could not be rolled back: {type(again).__name__}: {again})"
            rank_zero_warn(
                f"{type(self).__name__}.{hook.__name__} failed and was skipped (on_error='warn'): "
                f"{type(err).__name__}: {err}{restored}"
            )
            return None

    guarded._xai_guarded = True  # type: ignore[attr-defined]
    return guarded


def _shard_bounds(n: int, world: int, rank: int) -> Tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row probe that ``rank`` of ``world`` explains (contiguous)."""
    per = -(-n // max(1, world))
    return min(n, rank * per), min(n, (rank + 1) * per)


def _method(name: Any) -> Callable[..., Tensor]:
    """The function computing one (non-shared) method: built-in by name, or a Captum class."""
    if isinstance(name, str) and name in F.METHODS:
        return lambda model, x, t, **o: F.attribute(model, x, t, name, **o)
    from ..functional.captum_bridge import as_callable

    return as_callable(name)


def _image_summary(tag: str, image: np.ndarray) -> Any:
    """A TensorBoard image summary of an HxWx3 uint8 array, PNG-encoded once, for speed.

    ``SummaryWriter.add_image`` converts to float and back, resamples the image to its own size and
    PNG-encodes at the default (slow) zlib level; the picture is the same, encoded 6-8x faster here
    (:func:`~lightning_xai.functional.png_bytes`). Returns None when TensorBoard's protobuf is
    unavailable (then ``add_image`` is used).
    """
    try:
        from tensorboard.compat.proto.summary_pb2 import Summary
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    img = np.ascontiguousarray(image, dtype=np.uint8)
    height, width, channels = img.shape
    encoded = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=F.png_bytes(img))
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])
