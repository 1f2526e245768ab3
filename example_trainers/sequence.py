"""Explaining a 1-D convolutional classifier of signals (N, C, T) while it trains: maps, Grad-CAM, drift.

Two-channel signals of 64 steps, noise plus one bump: class 0 has its bump in channel 0, class 1 in
channel 1, at a random place. A small Conv1d network learns to find it. The probe (validation
signals) carries masks of the bumps, so ``RelevanceMass`` says which share of the saliency lies on
them; the share is printed per epoch (seed 0: about 0.68 from the first epoch on, while the bumps
cover 14% of the steps; 3 epochs take about 10 s on 2 CPU cores). The TensorBoard
images show each probe signal's channels as lines above a heat strip of its attribution (saliency and
Grad-CAM at the last convolution). A ``FeatureDriftMonitor`` follows the same saliency maps: the
importance of each channel per time bin (32 features: 16 bins of 4 steps per channel, named
``ch<c>[t<start>:<end>]``, e.g. ``ch1[t8:12]``), compared with the previous epoch and the first one (rank correlations,
top-k overlap, NDCG, JS divergence, and the per-signal maps' Spearman and SSIM) in the custom-scalars
dashboard's *Drift* section, and each feature's share of the importance by epoch in the images
``xai/drift/saliency/trajectory``. The bumps lie anywhere, so no time step matters much more than
another: the maps settle from epoch to epoch (Spearman with the previous epoch above 0.95).

Run:  .venv/bin/python example_trainers/sequence.py
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from digits import tensorboard_command  # noqa: E402

from lightning_xai import ProbeSet, checks  # noqa: E402
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor  # noqa: E402

STEPS, WIDTH = 64, 9


def signals(n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 2, 64)`` signals, their classes and ``(N, 1, 64)`` masks of the bumps."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 2, STEPS, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    masks = torch.zeros(n, 1, STEPS)
    bump = torch.hann_window(WIDTH + 2)[1:-1] * 1.5
    for i in range(n):
        start = int(torch.randint(0, STEPS - WIDTH, (1,), generator=g))
        x[i, int(y[i]), start : start + WIDTH] += bump
        masks[i, 0, start : start + WIDTH] = 1.0
    return x, y, masks


class SignalNet(pl.LightningModule):
    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 8, 5, padding=2)
        self.conv2 = nn.Conv1d(8, 8, 5, padding=2)
        self.fc = nn.Linear(8, 2)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.amax(-1))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class BumpMass(pl.Callback):
    """Prints, after each validation, the share of the probe's saliency on the bumps (``RelevanceMass``)."""

    def __init__(self, probe: ProbeSet) -> None:
        self.probe = probe
        self.history: List[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        if trainer.sanity_checking:
            return
        (result,) = checks.run([checks.RelevanceMass("saliency", min_mass=0.5)], pl_module, self.probe, target="true")
        self.history.append(result.value)
        print(f"epoch {trainer.current_epoch}: share of |saliency| on the bumps = {result.value:.3f}")


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, workers=True)
    x, y, _ = signals(1500, args.seed)
    vx, vy, vmasks = signals(300, args.seed + 1)
    probe = ProbeSet(vx[:16], vy[:16], masks=vmasks[:16])
    monitor = AttributionMonitor(probe, methods=["saliency", "grad_cam"], target="true", max_images=6)
    drift = FeatureDriftMonitor(probe, method="saliency", target="true")
    bumps = BumpMass(probe)
    logger = TensorBoardLogger(args.logdir, name="sequence")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=[monitor, drift, bumps],
        accelerator="cpu", devices=1, deterministic=True, enable_checkpointing=False, log_every_n_steps=10,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(
        SignalNet(), DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
        DataLoader(TensorDataset(vx, vy), batch_size=300),
    )
    print(f"\nval/acc = {float(trainer.callback_metrics['val/acc']):.3f}")
    prev, ref = (drift.last_scores.get(f"xai/drift/saliency/spearman/{k}") for k in ("prev", "ref"))
    if prev is not None and ref is not None:
        features = len(drift.trajectory()[2])
        print(f"saliency importance ({features} channel x time-bin features), Spearman with the previous epoch = "
              f"{prev:.3f}, with the first = {ref:.3f}")
    print(f"TensorBoard: {tensorboard_command(args.logdir)}")
    return {
        "val_acc": float(trainer.callback_metrics["val/acc"]), "bump_mass": bumps.history,
        "drift": dict(drift.last_scores), "importance": [h["importance"] for h in drift.history],
        "log_dir": str(logger.log_dir),
    }


if __name__ == "__main__":
    main()
