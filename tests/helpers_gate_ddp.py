"""A 2-process CPU DDP run of SanityGate (gloo), run as a script by test_gate_ddp.py.

Usage: python helpers_gate_ddp.py OUT_DIR ACTION [STRATEGY]   (STRATEGY: ddp (default) or ddp_spawn)
Each rank writes OUT_DIR/rank<k>.json with where it stopped (or what it raised).
"""

from __future__ import annotations

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from ddp_exit import LetGlooFinishAtExit  # noqa: E402
from helpers_gate import TinyClassifier, fail_on_rank_one_from_epoch, tiny_loaders, tiny_probe  # noqa: E402
from lightning_xai import checks  # noqa: E402
from lightning_xai.callbacks import SanityGate  # noqa: E402


class Record(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def _write(self, trainer: pl.Trainer, **extra: object) -> None:
        gate = next(cb for cb in trainer.callbacks if isinstance(cb, SanityGate))
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "current_epoch": trainer.current_epoch,
            "stopped_epoch": gate.stopped_epoch,
            "reason": gate.stopping_reason.value,
            "message": gate.stopping_reason_message,
            "wait_count": gate.wait_count,
            "passed": [e["passed"] for e in gate.report],
            **extra,
        }
        with open(os.path.join(self.out, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write(trainer, exception=type(exception).__name__, exception_message=str(exception))


def main(out: str, action: str, strategy: str = "ddp") -> None:
    torch.set_num_threads(1)
    gate = SanityGate(
        tiny_probe(),
        [
            checks.Custom(fail_on_rank_one_from_epoch, "rank_check", max_value=0.5),
            checks.Finite(),
            checks.RandomLogit("saliency", 1.0),
        ],
        action=action,
        report_dir=out,
        verbose=False,
    )
    trainer = pl.Trainer(
        strategy=strategy, accelerator="cpu", devices=2, max_epochs=6,
        callbacks=[gate, Record(out), LetGlooFinishAtExit()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out,
    )
    train, val = tiny_loaders()
    trainer.fit(TinyClassifier(), train, val)


if __name__ == "__main__":
    main(*sys.argv[1:])
