"""Per training step cost of the callbacks: the suite vs no callbacks vs four callbacks that do nothing.

Lightning calls every hook of every callback at every training step (and names each call with the
callback's ``state_key``), so any callback costs a little per step, whatever it does at validation.
This measures that cost alone: a tiny model (a 3x3 convolution and a linear layer) on 8x8 inputs,
batches of 2, no validation, so that the step itself is as cheap as it gets and the hooks show.

Variants, each a fresh ``Trainer.fit`` of one epoch of ``--steps`` steps, interleaved over ``--runs``
rounds (median of process CPU time):

- ``none``: no callbacks;
- ``empty``: four ``pytorch_lightning.Callback()`` that override nothing (Lightning's own dispatch);
- ``suite``: ``AttributionMonitor`` (saliency, input x gradient, Grad-CAM), ``FeatureDriftMonitor``,
  ``DeadReLUMonitor(source="validation")`` and ``SanityGate([ParameterRandomization()])``.

Run:  .venv/bin/python benchmarks/step_overhead.py [--steps 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable, Dict, List

import torch

from _common import emit, table

import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet, checks
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(argv: Any = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2 * args.steps, 3, 8, 8, generator=g), torch.arange(2 * args.steps) % 10
    probe = ProbeSet(x[:8], targets=y[:8])
    variants: Dict[str, Callable[[], List[pl.Callback]]] = {
        "none": lambda: [],
        "empty": lambda: [pl.Callback() for _ in range(4)],
        "suite": lambda: [
            AttributionMonitor(probe, methods=["saliency", "input_x_gradient", "grad_cam"]),
            FeatureDriftMonitor(probe, method="saliency"),
            DeadReLUMonitor(source="validation"),
            SanityGate(probe, [checks.ParameterRandomization("saliency")]),
        ],
    }

    def fit(callbacks: List[pl.Callback]) -> float:
        trainer = pl.Trainer(
            max_epochs=1, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, limit_val_batches=0, accelerator="cpu",
        )
        start = time.process_time()
        trainer.fit(Tiny(), DataLoader(TensorDataset(x, y), batch_size=2))
        return time.process_time() - start

    times: Dict[str, List[float]] = {k: [] for k in variants}
    for r in range(args.runs):
        for name in list(variants)[r % 3:] + list(variants)[: r % 3]:
            times[name].append(fit(variants[name]()))
    med = {k: statistics.median(v) for k, v in times.items()}
    per_step = {k: 1e6 * (v - med["none"]) / args.steps for k, v in med.items()}
    rows = [[k, med[k], per_step[k]] for k in variants]
    text = table(rows, ["variant", "fit s (CPU)", "us per step over none"])
    emit("step_overhead", {"config": {"steps": args.steps, "runs": args.runs, "statistic": "median, interleaved",
                                      "clock": "process CPU time"},
                           "results": {k: {"fit_s": med[k], "us_per_step": per_step[k]} for k in variants}}, text)
    return per_step


if __name__ == "__main__":
    main()
