"""Every DDP rank of the tests gives gloo's worker threads a moment before interpreter shutdown.

A gloo rank aborts now and then as it exits ("terminate called without an active exception",
SIGABRT), after a run that went well. The C++ backtrace: a ``ProcessGroupGloo::runLoop`` worker
thread destroys the last, already waited-for, ``AsyncAllreduceWork``; releasing its tensors
needs the GIL, and a thread that asks for the GIL once interpreter shutdown has begun is ended
with ``pthread_exit``, which cannot unwind through that destructor. Destroying the process group
first does not prevent it (gloo's shutdown does not join the workers). An ``atexit`` handler that
releases the GIL for a moment does: it runs while the interpreter is still whole.

Measured with a bare ``mp.spawn`` script (two gloo ranks, a DDP model, 200 waited all-reduces,
exit): about one run in ten aborted without the handler, also with ``destroy_process_group`` at
exit; none in 100 runs with it. Lightning's own runs hit it less often, but often enough to fail a
full test session now and then.

This module imports nothing from the test package, so ``helpers_gate_ddp.py`` (a script) can use it.
"""

from __future__ import annotations

import atexit
import time
from typing import Any, List

import pytorch_lightning as pl
import torch

_REGISTERED = False


def _let_gloo_workers_finish() -> None:
    time.sleep(0.05)  # GIL released: a worker waiting to free its last work's tensors does so now


class LetGlooFinishAtExit(pl.Callback):
    """Registers, in each rank's process, the ``atexit`` handler above (once per process)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        global _REGISTERED
        if not _REGISTERED and torch.distributed.is_available() and torch.distributed.is_initialized():
            atexit.register(_let_gloo_workers_finish)
            _REGISTERED = True


def with_exit_cleanup(callbacks: Any, strategy: Any) -> List[Any]:
    """``callbacks`` as a list, plus :class:`LetGlooFinishAtExit` when ``strategy`` is a DDP one."""
    out = list(callbacks or [])
    if isinstance(strategy, str) and strategy.startswith("ddp"):
        out.append(LetGlooFinishAtExit())
    return out
