"""What every lightning_xai callback shares: the probe, the target rule, scheduling and checkpoint state.

The work itself is elsewhere: attributions come from the per-trainer
:class:`~lightning_xai.engine.AttributionEngine`, logging goes through a
:class:`~lightning_xai.sink.LogSink`. A callback decides when to run and what to log.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import functional as F
from .._lightning import Callback, TensorBoardLoggers
from ..engine import AttributionEngine, Chunking, Shard, check_target_rule, first_output, resolve_target, target_key
from ..functional.methods import MethodCall
from ..probe import ProbeSet, ProbeSpec, split_item
from ..sink import LogSink, warn_once
from ._cache import engine_for
from ._schedule import (
    attribution_dtype,
    guard_hook,
    in_fit,
    is_overridden,
    schedule_warning,
    stage_of,
)
from ._terminal import fit_end_line, shows_progress

__all__ = ["XAICallback", "TargetSpec"]

TargetSpec = Union[str, int, Callable[[Tensor, Optional[Tensor]], Tensor]]

class XAICallback(Callback):
    """Base of the lightning_xai callbacks (not used directly).

    Holds the probe, the target rule and ``every_n_epochs``; validates them against the model at
    ``setup``; asks the trainer's attribution engine for maps; logs through a log sink.

    The first lightning_xai callback of a run to start (``on_fit_start`` or ``on_validation_start``)
    writes the custom-scalars dashboard layout to each TensorBoard logger, once per log directory
    (:func:`lightning_xai.sink.ensure_layout`). Subclasses say which of its categories they fill in
    ``dashboard_categories``; subclasses that override these hooks call ``super()``.
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
                setattr(cls, name, guard_hook(hook))

    #: whether the callback explains probes of several inputs (a tuple or dict of tensors)
    accepts_structured_probes: bool = False

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
        output: F.OutputSpec = None,
        embedding: Optional[str] = None,
        pad_id: int = 0,
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
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
        check_target_rule(target, probe if isinstance(probe, ProbeSet) else None)
        self._check_structured(probe)
        F.check_output_spec(output)
        self.probe: Any = probe
        #: which of the model's outputs is explained (``None``: the model returns one tensor)
        self.output = output
        if embedding is not None and not isinstance(embedding, str):
            raise TypeError(f"embedding must be the dotted name of an nn.Embedding, got {embedding!r}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int):
            raise TypeError(f"pad_id must be an int token id, got {pad_id!r}")
        #: token ids: the embedding they are attributed at (None: found by itself) and the padding id
        self.embedding, self.pad_id = embedding, pad_id
        self.target = target
        self.every_n_epochs = every_n_epochs
        #: rows per pass: ``chunk_size``, halved after an out-of-memory error, capped at the training batch
        self.chunking = Chunking(chunk_size)
        self.chunk_size = chunk_size
        self.on_error = on_error
        self.dtype = attribution_dtype(dtype)
        self._warned: set = set()
        #: the probe part of ``state_key``, fixed at construction: a ``ProbeSpec`` keeps its key once drawn,
        #: so a checkpoint written after the draw loads into a callback that has not drawn yet
        self._probe_key: Optional[str] = (
            repr(probe) if isinstance(probe, ProbeSpec) else None if probe is None else probe.fingerprint()
        )
        #: the probe state of a checkpoint loaded before a ``ProbeSpec`` was drawn (compared once drawn)
        self._pending_probe_state: Optional[Mapping[str, Any]] = None
        #: validation runs of ``fit`` seen so far (``every_n_epochs`` counts these; saved in checkpoints)
        self.validation_runs = 0
        #: the state before the first ``fit``: a callback reused in another ``fit`` starts from it again
        self._fresh: Any = None

    def _tokens(self) -> Dict[str, Any]:
        """``embedding=``/``pad_id=`` for the engine, only where they differ from the defaults."""
        tokens: Dict[str, Any] = {}
        if self.embedding is not None:
            tokens["embedding"] = self.embedding
        if self.pad_id != 0:
            tokens["pad_id"] = self.pad_id
        return tokens

    def _padding(self) -> Optional[Tensor]:
        """``(N, T)`` True at the padding positions of a probe of token ids (None for other probes)."""
        probe = self.probe
        return probe.padding(self.pad_id) if isinstance(probe, ProbeSet) else None

    def _check_structured(self, probe: Any) -> None:
        if isinstance(probe, ProbeSet) and probe.structured and not self.accepts_structured_probes:
            raise ValueError(
                f"{type(self).__name__} does not yet explain probes of several inputs ({probe!r}); "
                "AttributionMonitor and lightning_xai.functional.attribute do"
            )

    # ------------------------------------------------------------------ identity and scheduling
    @property
    def state_key(self) -> str:
        # Lightning reads it at every hook call of every callback (the profiler's name for the call), so
        # several times per training step: it is made once, and again after any attribute of the callback
        # is set (``__setattr__``), which the steps do not do
        cached = self.__dict__.get("_state_key_cache")
        if cached is None:
            cached = self.__dict__["_state_key_cache"] = self._generate_state_key(**self._state_key_fields())
        return cached

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_state_key_cache", None)  # the key may read what changes
        super().__setattr__(name, value)

    def _state_key_fields(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"target": target_key(self.target), "dtype": str(self.dtype).replace("torch.", "")}
        if self.output is not None:  # absent by default: the keys of existing checkpoints stay
            fields["output"] = repr(F.output_key(self.output))
        fields.update(self._tokens())
        return {"probe": self._probe_key, **fields}

    def declared_metrics(self) -> Tuple[str, ...]:
        """The scalar tags this callback logs, as regular expressions matched whole (checks that read a
        logged value find the callback that provides it by these)."""
        return ()

    def dashboard_charts(self) -> Optional[Dict[str, Dict[str, List[str]]]]:
        """``{category: {chart title: [tag regex, ...]}}``: the custom-scalars charts for what this
        callback logs, as configured (merged with the other callbacks' by
        :func:`lightning_xai.sink.layout_charts`). None: the :data:`~lightning_xai.sink.DEFAULT_LAYOUT`
        categories named in ``dashboard_categories``."""
        return None

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
            if owner is not None and is_overridden(owner, hook):
                loader = getattr(owner, hook)()
                break
        if loader is None:  # loaders passed straight to fit/validate: known once the loop starts
            attr = {"train": "train_dataloader", "val": "val_dataloaders", "test": "test_dataloaders"}[spec.source]
            loader = getattr(trainer, attr, None)
        if loader is None:
            return False
        self.probe = spec.build_from(loader)
        self._check_structured(self.probe)
        check_target_rule(self.target, self.probe)
        self._on_probe_drawn()
        if self._pending_probe_state is not None:
            pending, self._pending_probe_state = self._pending_probe_state, None
            self._check_probe_state({"probe": pending})
        return True

    def _on_probe_drawn(self) -> None:
        """Called once a ``ProbeSpec`` became a ``ProbeSet``: subclasses derive what depends on the probe."""

    def _should_run(self, trainer: Any) -> bool:
        """In ``fit``: every ``every_n_epochs``-th validation run; in ``validate()``/``test()``: always."""
        if trainer.sanity_checking:
            return False
        if isinstance(self.probe, ProbeSpec):
            raise ValueError(
                f"{type(self).__name__}: {self.probe!r} could not be drawn: no {self.probe.source} dataloader was "
                "found (datamodule, LightningModule hook or loaders passed to fit/validate). Pass a ProbeSet, "
                "or a ProbeSpec whose source the run has."
            )
        if not in_fit(trainer):
            return True
        return self.validation_runs > 0 and self.validation_runs % self.every_n_epochs == 0

    def _check_schedule(self, trainer: Any) -> None:
        """Warn once, at setup, when the run's validation loop can never run this callback."""
        warning = schedule_warning(type(self).__name__, self.every_n_epochs, trainer)
        if warning:
            self._warn_once("schedule", warning)

    # ------------------------------------------------------------------ the model
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
                return F.call_model(pl_module, F.take_rows(probe.inputs_for(pl_module), slice(0, 2)))
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            shapes = F.map_tensors(lambda t: tuple(t.shape), probe.inputs)
            raise ValueError(
                f"{type(self).__name__}: the probe's inputs of shape {shapes} do not fit "
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
        try:
            out = first_output(out, self.output)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None
        if not isinstance(out, Tensor) or out.dim() not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: {type(pl_module).__name__} returns "
                f"{type(out).__name__ if not isinstance(out, Tensor) else tuple(out.shape)} for the probe; "
                "attributions need (N,) or (N, classes) outputs from forward(); pass output=fn(outputs) that "
                "reduces them (e.g. a segmentation map's mean logit over a region)"
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

    # ------------------------------------------------------------------ the engine
    def _engine(self, trainer: Any) -> AttributionEngine:
        return engine_for(trainer)

    def _outputs(self, trainer: Any, pl_module: nn.Module) -> Tensor:
        """The model's outputs on the probe this epoch (computed once, shared with the other callbacks)."""
        assert isinstance(self.probe, ProbeSet)
        return self._engine(trainer).outputs(
            pl_module, self.probe, dtype=self.dtype, chunking=self.chunking, step=trainer.global_step,
            output=self.output,
        )

    def _resolve_target(self, trainer: Any, pl_module: nn.Module) -> Optional[Tensor]:
        assert isinstance(self.probe, ProbeSet)
        return resolve_target(self.target, self._outputs(trainer, pl_module), self.probe.targets)

    def _attributions(self, trainer: Any, pl_module: nn.Module, calls: Mapping[str, MethodCall]) -> Dict[str, Tensor]:
        """The probe's maps for each method, shared with the other callbacks this epoch (sharded over
        DDP ranks and gathered, chunked, out-of-memory halving: :class:`~lightning_xai.engine.AttributionEngine`)."""
        assert isinstance(self.probe, ProbeSet)
        world = max(1, int(getattr(trainer, "world_size", 1)))
        shard = Shard(int(getattr(trainer, "global_rank", 0)), world, trainer.strategy.all_gather if world > 1 else None)
        return self._engine(trainer).attributions(
            pl_module, self.probe, calls, target=self.target, dtype=self.dtype, chunking=self.chunking,
            shard=shard, step=trainer.global_step, output=self.output, tokens=self._tokens(),
        )

    # ------------------------------------------------------------------ logging
    def _sink(self, trainer: Any) -> LogSink:
        """Outside ``fit`` (``validate()``, ``test()``) tags get the stage as a prefix (``validate/xai/...``),
        so that they never overwrite what ``fit`` logged at the same step."""
        prefix = "" if in_fit(trainer) else f"{stage_of(trainer)}/"
        return LogSink(trainer, owner=type(self).__name__, warned=self._warned, prefix=prefix)

    def _warn_once(self, key: str, message: str) -> None:
        warn_once(self._warned, key, message)

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
        """What every callback's checkpoint state holds: the probe and the count of validation runs."""
        common: Dict[str, Any] = {"validation_runs": int(self.validation_runs)}
        if isinstance(self.probe, ProbeSet):
            return {"probe": self.probe.state_dict(), **common}
        return common if self._pending_probe_state is None else {"probe": dict(self._pending_probe_state), **common}

    def _check_probe_state(self, state: Mapping[str, Any]) -> None:
        self.validation_runs = int(state.get("validation_runs", self.validation_runs))
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
        if stage == "fit":
            # a callback reused in another fit starts afresh (a checkpoint, loaded after setup, restores it)
            if self._fresh is None:
                self._fresh = self._snapshot()
            else:
                self._restore(self._fresh)
            self._check_schedule(trainer)
        if self._resolve_probe_spec(trainer, pl_module, stage):
            self._setup_checks(trainer, pl_module)

    def _setup_checks(self, trainer: Any, pl_module: Any) -> None:
        """Validate the configuration against the model (subclasses extend it); raises at setup."""
        self._check_against_model(pl_module)
        probe = self.probe
        floats = [t for _, t in F.input_entries(probe.inputs) if t.is_floating_point()] if isinstance(probe, ProbeSet) else []
        if isinstance(probe, ProbeSet) and floats:
            bad = ~torch.stack([torch.isfinite(t.reshape(len(probe), -1)).all(1) for t in floats]).all(0)
            if bool(bad.any()):
                self._warn_once(
                    "nonfinite-probe",
                    f"{type(self).__name__}: {int(bad.sum())} of {len(probe)} probe samples hold NaN or infinity "
                    f"(rows {bad.nonzero().flatten().tolist()[:8]}); their maps and every summary over the probe "
                    "will be NaN. Clean the data, or build the probe from finite samples.",
                )

    def _try_methods(self, trainer: Any, pl_module: nn.Module, calls: Mapping[str, MethodCall]) -> None:
        """Run each method once on one probe sample (once per run, whichever callback asks first), so that
        what no static check catches (a layer whose maps cannot be drawn, a window larger than the
        input, ...) fails at setup, not epochs later."""
        probe = self.probe
        if not isinstance(probe, ProbeSet) or any(
            isinstance(p, nn.parameter.UninitializedParameter) for p in pl_module.parameters()
        ):
            return
        try:
            self._engine(trainer).trial(
                pl_module, probe, calls, target=self.target, dtype=self.dtype, output=self.output, tokens=self._tokens()
            )
        except Exception as err:  # noqa: BLE001 - re-raised with the fix
            name = getattr(err, "method", "?")
            options = dict(calls[name].options) if name in calls else {}
            raise ValueError(
                f"{type(self).__name__}: method {name!r} with options {options} fails on one probe sample "
                f"({type(err).__name__}: {err}). Fix its options (or the method) before training."
            ) from err

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._sink(trainer).layout()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._sink(trainer).layout()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # one line for the whole suite, from the first lightning_xai callback: the gate's report (if
        # written) and the command that opens the run in TensorBoard; only where a progress bar shows
        callbacks = list(getattr(trainer, "callbacks", []))
        if next((cb for cb in callbacks if isinstance(cb, XAICallback)), None) is not self or not shows_progress(trainer):
            return
        reports = [p for cb in callbacks if isinstance(cb, XAICallback) for p in [getattr(cb, "report_path", None)]
                   if isinstance(p, str) and os.path.exists(p)]
        logdirs = [str(lg.log_dir) for lg in getattr(trainer, "loggers", []) if isinstance(lg, TensorBoardLoggers)]
        line = fit_end_line(reports, logdirs)
        if line is not None:
            print(line, flush=True)  # the bars are closed by now (Lightning closes them when training ends)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.chunking.batch_rows is None:
            try:
                self.chunking.batch_rows = int(split_item(batch)[0].shape[0])
            except (ValueError, IndexError, TypeError, AttributeError):
                self.chunking.batch_rows = 0  # unknown layout (0): keep the probe-size default

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._engine(trainer).start_epoch()
        if not trainer.sanity_checking and in_fit(trainer):
            self.validation_runs += 1
        if isinstance(self.probe, ProbeSpec) and self._resolve_probe_spec(trainer, pl_module):
            self._setup_checks(trainer, pl_module)

    # ``trainer.test()`` runs the test loop, not the validation loop: the same work, on its hooks
    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.on_validation_epoch_start(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.on_validation_epoch_end(trainer, pl_module)

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
