"""When the callbacks run and how a hook fails: the schedule of validation runs, the stage a trainer is
in, and the guard that turns ``on_error="warn"`` into a warning and keeps state intact."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import torch

from .._lightning import rank_zero_warn
from ..errors import SanityCheckError

__all__ = [
    "RESULTS", "SNAPSHOT_HOOKS", "attribution_dtype", "expected_validation_runs", "guard_hook", "in_fit",
    "is_overridden", "schedule_warning", "stage_of",
]


def schedule_warning(name: str, every_n_epochs: int, trainer: Any) -> Optional[str]:
    """Why the run's validation loop can never run a callback scheduled every ``every_n_epochs``
    validation runs, or None."""
    limit = getattr(trainer, "limit_val_batches", 1.0)
    if limit == 0:
        return (
            f"{name} never runs: limit_val_batches=0 turns validation off, and the callbacks run at the end "
            "of validation. Give limit_val_batches a positive value, or remove the callback."
        )
    runs = expected_validation_runs(trainer)
    if runs is not None and every_n_epochs > runs:
        return (
            f"{name}(every_n_epochs={every_n_epochs}) never runs: this run validates {runs} time(s) "
            f"(max_epochs={trainer.max_epochs}, check_val_every_n_epoch={trainer.check_val_every_n_epoch}), and "
            f"every_n_epochs counts validation runs. Use every_n_epochs <= {max(1, runs)}."
        )
    return None


def in_fit(trainer: Any) -> bool:
    """Whether ``trainer`` is inside ``fit`` (not ``validate()``, ``test()`` or ``predict()``)."""
    return stage_of(trainer) == "fit"


def stage_of(trainer: Any) -> str:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn or "fit"))


def expected_validation_runs(trainer: Any) -> Optional[int]:
    """How many validation runs ``fit`` makes, when the Trainer's settings say it (else None)."""
    max_epochs = getattr(trainer, "max_epochs", None)
    every = getattr(trainer, "check_val_every_n_epoch", 1)
    interval = getattr(trainer, "val_check_interval", 1.0)
    if not max_epochs or max_epochs < 0 or getattr(trainer, "max_steps", -1) != -1 or not every:
        return None
    if not (isinstance(interval, float) and 0 < interval <= 1.0):
        return None
    return (max_epochs // every) * max(1, int(round(1.0 / interval)))


def attribution_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
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


def is_overridden(owner: Any, hook: str) -> bool:
    """Whether a datamodule/LightningModule defines ``hook`` itself (the base classes raise in it)."""
    for klass in type(owner).__mro__:
        if hook in klass.__dict__:
            return klass.__module__.split(".")[0] not in ("pytorch_lightning", "lightning")
    return False


#: what a validation run leaves for inspection (not state: outside fit, kept after the state is put back)
RESULTS = ("last_attributions", "last_summary", "last_scores")

#: guarded hooks that update a callback's state (history, colour scales, patience): a failure in
#: them restores the state they started from
SNAPSHOT_HOOKS = ("on_validation_epoch_end", "on_train_epoch_end")


def guard_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a hook so that with ``on_error="warn"`` a failure warns and training goes on."""
    @functools.wraps(hook)
    def guarded(self: Any, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        if hook.__name__ in SNAPSHOT_HOOKS and not in_fit(trainer) and not trainer.sanity_checking:
            # validate()/test() outside fit explain and log the current model but change no state; the
            # results it made stay readable (``last_attributions``, ``last_summary``, ``last_scores``)
            kept = self._snapshot()
            try:
                return _call(self, hook, trainer, *args, **kwargs)
            finally:
                results = {name: getattr(self, name) for name in RESULTS if hasattr(self, name)}
                self._restore(kept)
                for name, value in results.items():
                    setattr(self, name, value)
        return _call(self, hook, trainer, *args, **kwargs)

    guarded._xai_guarded = True  # type: ignore[attr-defined]
    return guarded


def _call(self: Any, hook: Callable[..., Any], trainer: Any, *args: Any, **kwargs: Any) -> Any:
    """``hook``, with ``on_error="warn"`` turning a failure into a warning (single process)."""
    if self.on_error == "raise" or getattr(trainer, "world_size", 1) > 1:
        # under DDP a rank that skipped would leave the others waiting in a collective: raise
        return hook(self, trainer, *args, **kwargs)
    # an epoch-level hook that fails midway leaves the callback as it was before the hook
    snapshot = None
    try:
        if hook.__name__ in SNAPSHOT_HOOKS:
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
