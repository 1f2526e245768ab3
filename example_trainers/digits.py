"""The main job: a small CNN on scikit-learn's handwritten digits, explained at every validation epoch.

The whole suite is attached: AttributionMonitor (six methods), FeatureDriftMonitor (integrated
gradients, sharing AttributionMonitor's maps), DeadReLUMonitor (on the validation batches, no extra
forward pass), FeatureVisualizationMonitor (what each digit looks like to the model, and the first
layer's kernels, every second epoch) and a SanityGate with checks a healthy model passes (Adebayo et al.'s parameter
randomisation, random logit, IG completeness, finite values, dead units, drift against the reference).

Run:  .venv/bin/python example_trainers/digits.py          (about a minute on 2 CPU cores)
Then: .venv/bin/tensorboard --logdir lightning_logs        (the command is printed at the end)
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)

The data is scikit-learn's bundled copy of the UCI digits (1797 8x8 images), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lightning_xai import ProbeSet, checks  # noqa: E402
from lightning_xai.callbacks import (  # noqa: E402
    AttributionMonitor,
    DeadReLUMonitor,
    FeatureDriftMonitor,
    FeatureVisualizationMonitor,
    SanityGate,
    tensorboard_command,  # the example trainers print the command that opens their runs
)


def print_gate_report(report: List[Dict[str, Any]], width: int = 24) -> None:
    """The gate's report (``SanityGate.report``) as a table: one row per epoch, a column per check, the decision."""
    print("\nepoch  " + "  ".join(f"{c['name']:>{width}}" for c in report[0]["checks"]) + "  gate")
    for entry in report:
        values = "  ".join(
            f"{c['value']:>{width}.3f}" if isinstance(c["value"], float) else f"{c['value']:>{width}}" for c in entry["checks"]
        )
        print(f"{entry['epoch']:>5}  {values}  {entry['decision']}")


def digits_datasets(seed: int = 0, val_fraction: float = 0.2) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's digits as (N, 1, 8, 8) float images in [0, 1] with int labels, split seeded."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


class DigitsDataModule(pl.LightningDataModule):
    """The digits split of :func:`digits_datasets` as a datamodule (what ``example_trainers/cli.py`` trains on).

    Args:
        batch_size: training batch size (validation uses 256).
        seed: the seed of the train/validation split (and of the training shuffle).
        val_fraction: share of the 1797 images held out for validation.
    """

    def __init__(self, batch_size: int = 64, seed: int = 0, val_fraction: float = 0.2) -> None:
        super().__init__()
        self.batch_size, self.seed, self.val_fraction = batch_size, seed, val_fraction
        self.train: TensorDataset
        self.val: TensorDataset

    def setup(self, stage: str) -> None:
        self.train, self.val = digits_datasets(self.seed, self.val_fraction)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)


class DigitsCNN(pl.LightningModule):
    """Two conv blocks (with BatchNorm), dropout and a linear classifier: ~20k parameters."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def _step(self, batch, stage: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", acc, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self._step(batch, "val")

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def feature_visualization(probe: ProbeSet) -> FeatureVisualizationMonitor:
    """Each digit as the model sees it, every second epoch: 128 Adam steps on a 1/f spectrum, one-pixel
    jitter and a stronger L2 than the default (8x8 inputs: a few pixels decide), on the probe's range."""
    return FeatureVisualizationMonitor(
        every_n_epochs=2, steps=128, l2=0.05, jitter=1, parametrization="fft", probe=probe,
        units=[("features.3", c) for c in range(8)],
    )


def suite(probe: ProbeSet, methods) -> list:  # type: ignore[no-untyped-def]
    """Every lightning_xai callback, configured for the digits CNN."""
    return [
        AttributionMonitor(probe, methods=methods, target="predicted"),
        FeatureDriftMonitor(probe, method="integrated_gradients", reference="first", top_k=8),
        DeadReLUMonitor(source="validation", warn_above=0.5),
        feature_visualization(probe),
        SanityGate(
            probe,
            checks=[
                checks.ParameterRandomization("saliency", max_similarity=0.5),
                checks.RandomLogit("saliency", max_similarity=0.7),
                checks.Completeness(max_error=0.05, n_steps=64),
                checks.Finite(),
                checks.DeadUnits(max_fraction=0.5),
                checks.Drift("spearman", min_value=0.3, method="integrated_gradients", against="ref", missing="skip"),
            ],
            action="stop",
            patience=1,
            warmup_epochs=1,
        ),
    ]


def main(argv=None) -> str:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--probe-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", nargs="+",
        default=["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "grad_cam", "occlusion"],
    )
    parser.add_argument(
        "--attributions-only", action="store_true", help="attach AttributionMonitor alone (no drift, ReLU, gate)"
    )
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, workers=True)
    train, val = digits_datasets(args.seed)
    probe = ProbeSet.from_dataset(val, n=args.probe_size, seed=args.seed)
    callbacks = suite(probe, args.methods) if not args.attributions_only else [
        AttributionMonitor(probe, methods=args.methods, target="predicted")
    ]
    logger = TensorBoardLogger(args.logdir, name="digits")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=callbacks, accelerator="cpu", devices=1,
        deterministic=True, enable_checkpointing=False, log_every_n_steps=10,
    )
    trainer.fit(
        DigitsCNN(),
        DataLoader(train, batch_size=64, shuffle=True),
        DataLoader(val, batch_size=256),
    )
    print(f"\nval/acc = {float(trainer.callback_metrics['val/acc']):.3f}")
    gate = next((cb for cb in callbacks if isinstance(cb, SanityGate)), None)
    if gate is not None:
        verdict = "passed every epoch" if all(e["passed"] for e in gate.report) else gate.stopping_reason_message
        print(f"SanityGate: {verdict} (report: {gate.report_path})")
    print(f"TensorBoard run written to {logger.log_dir}")
    print(f"View it with:\n    {tensorboard_command(args.logdir)}")
    return str(logger.log_dir)


if __name__ == "__main__":
    main()
