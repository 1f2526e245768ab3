"""Feature-importance drift on tabular data: an MLP on scikit-learn's breast-cancer data (30 named features).

Run:  .venv/bin/python example_trainers/tabular.py          (about 10 seconds on 2 CPU cores)
      .venv/bin/python example_trainers/tabular.py --leak   (a label leak appears mid-training)
Then: .venv/bin/tensorboard --logdir lightning_logs         (the command is printed at the end)
(from the repository root, in the environment that ``bash scripts/setup.sh`` makes)

TensorBoard shows, next to the loss curves:
- ``xai/importance/integrated_gradients/<feature>``: one curve per feature (mean |IG| over the probe);
- ``xai/drift/integrated_gradients/<metric>/{prev,ref}``: how much the importance ranking and
  distribution moved since the previous epoch and since the first epoch;
- ``xai/drift/integrated_gradients/trajectory``: each feature's share of the importance, per epoch;
- ``xai/attr/integrated_gradients``: AttributionMonitor's bar chart, from the same attributions
  (computed once per epoch for both callbacks).

With ``--leak``, from epoch ``--leak-epoch`` (6) on one feature column (``mean fractal dimension``, a
weak predictor) is replaced in the training and validation data by a noisy copy of the label, as a
broken join in a data pipeline would do. The probe stays the fixed set of clean validation rows drawn
at the start, so what moves is the model, not the data. The reference is the first epoch after a
3-epoch warmup (epoch 3). What to look for (seed 0): the leaked feature's importance curve bends up
at epoch 6 and keeps climbing (about 4x by epoch 11, against 1.3x without the leak), it climbs from
rank 11 to rank 1 of 30, the trajectory heatmap's row lights up, ``js_divergence/prev`` spikes at
epoch 6 and ``ndcg/ref`` falls faster than without the leak.

The data is scikit-learn's bundled copy of the Wisconsin diagnostic breast-cancer set (569 rows), so
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from digits import tensorboard_command  # noqa: E402

from lightning_xai import ProbeSet  # noqa: E402
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor  # noqa: E402

LEAK_FEATURE = "mean fractal dimension"


class LeakableTable(Dataset):
    """Rows of standardised features and labels; ``leaking=True`` swaps one column for a noisy label copy."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, leak_column: int, seed: int) -> None:
        self.x, self.y = x, y
        g = torch.Generator().manual_seed(seed)
        self.leaked = x.clone()
        self.leaked[:, leak_column] = (2.0 * y.float() - 1.0) + 0.1 * torch.randn(len(y), generator=g)
        self.leaking = False

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return (self.leaked if self.leaking else self.x)[i], self.y[i]


def breast_cancer_datasets(seed: int = 0, val_fraction: float = 0.25) -> Tuple[LeakableTable, LeakableTable, List[str]]:
    """Train/validation splits (seeded), features standardised with the training statistics."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    names = [str(n) for n in data.feature_names]
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    column = names.index(LEAK_FEATURE)
    return LeakableTable(x[train], y[train], column, seed), LeakableTable(x[val], y[val], column, seed + 1), names


class TabularMLP(pl.LightningModule):
    """30 -> 32 -> 32 -> 2 with ReLU."""

    def __init__(self, n_features: int = 30, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self._step(batch, "val")

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class LeakAt(pl.Callback):
    """Turns the leak on in the given datasets from ``epoch`` on (before that epoch's training)."""

    def __init__(self, epoch: int, datasets: Sequence[LeakableTable]) -> None:
        self.epoch = epoch
        self.datasets = list(datasets)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for ds in self.datasets:
            ds.leaking = trainer.current_epoch >= self.epoch


def main(argv: Optional[Sequence[str]] = None) -> FeatureDriftMonitor:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--leak", action="store_true", help="inject a label-leaking feature mid-training")
    parser.add_argument("--leak-epoch", type=int, default=6)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--probe-size", type=int, default=64)
    parser.add_argument("--warmup-epochs", type=int, default=3, help="reference = the first epoch after these")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a tiny model runs fastest on one)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch table")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    train, val, names = breast_cancer_datasets(args.seed)
    probe = ProbeSet.from_dataset(val, n=args.probe_size, seed=args.seed, feature_names=names)
    ig = {"integrated_gradients": {"n_steps": 32}}
    drift = FeatureDriftMonitor(probe, method=ig, top_k=5, warmup_epochs=args.warmup_epochs)
    callbacks: List[pl.Callback] = [AttributionMonitor(probe, methods=ig), drift]
    if args.leak:
        callbacks.append(LeakAt(args.leak_epoch, [train, val]))
    logger = TensorBoardLogger(args.logdir, name="tabular_leak" if args.leak else "tabular")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=callbacks, accelerator="cpu", devices=1,
        deterministic=True, enable_checkpointing=False, log_every_n_steps=5,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(
        TabularMLP(len(names)),
        DataLoader(train, batch_size=32, shuffle=True),
        DataLoader(val, batch_size=256),
    )

    if not args.quiet:
        print_table(drift, names.index(LEAK_FEATURE))
        print(f"\nval/acc = {float(trainer.callback_metrics['val/acc']):.3f}")
        print(f"TensorBoard run written to {logger.log_dir}")
        print(f"View it with:\n    {tensorboard_command(args.logdir)}")
    return drift


def print_table(drift: FeatureDriftMonitor, leak_row: int) -> None:
    """Per epoch: drift against the previous epoch and the reference, and where the leak-prone feature ranks."""
    from lightning_xai import functional as F

    shares, epochs, _ = drift.trajectory()
    ref = drift.reference["importance"]  # type: ignore[index]
    print(f"\nreference: epoch {drift.reference['epoch']}")  # type: ignore[index]
    print(f"epoch  spearman/prev  js_div/prev  ndcg/ref  topk/ref  {LEAK_FEATURE!r}: share  rank")
    for i, epoch in enumerate(epochs):
        cur = drift.history[i]["importance"]
        prev = F.drift_scores(drift.history[i - 1]["importance"], cur, metrics=["spearman", "js_divergence"]) if i else {}
        vs_ref = F.drift_scores(ref, cur, metrics=["ndcg", "topk_overlap"], top_k=drift.top_k)
        rank = int((shares[:, i] > shares[leak_row, i]).sum()) + 1
        print(
            f"{epoch:5d}  {prev.get('spearman', float('nan')):13.3f}  {prev.get('js_divergence', float('nan')):11.4f}"
            f"  {vs_ref['ndcg']:8.3f}  {vs_ref['topk_overlap']:8.2f}  {float(shares[leak_row, i]):28.3f}  {rank:4d}"
        )


if __name__ == "__main__":
    main()
