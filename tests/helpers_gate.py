"""The gate tests' model, data and scripted checks; the DDP script ``helpers_gate_ddp.py`` imports this
module on its own (outside the test package), so it imports nothing from the tests."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet, checks


class TinyClassifier(pl.LightningModule):
    """A small MLP on (N, 1, 4, 4) inputs with 3 classes; logs val/loss."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def tiny_data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = (x[:, 0, :2].sum((1, 2)) * 3 / 4).long().clamp(0, 2)
    return TensorDataset(x, y)


def tiny_loaders(n: int = 48, batch_size: int = 16):  # type: ignore[no-untyped-def]
    ds = tiny_data(n)
    return DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=batch_size)


def tiny_probe(n: int = 6) -> ProbeSet:
    ds = tiny_data()
    return ProbeSet(ds.tensors[0][:n], ds.tensors[1][:n])


class Scripted:
    """A Custom check's fn returning ``values[epoch]`` (picklable, for ddp_spawn)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.calls: List[int] = []

    def __call__(self, ctx: checks.CheckContext) -> float:
        self.calls.append(int(ctx.epoch))
        return float(self.values[min(int(ctx.epoch), len(self.values) - 1)])


def fail_on_rank_one_from_epoch(ctx: checks.CheckContext) -> float:
    """1.0 (failing under max 0.5) on rank 1 from epoch 2 on; 0.0 elsewhere."""
    return 1.0 if ctx.global_rank == 1 and ctx.epoch >= 2 else 0.0


class MetricLogger(pl.Callback):
    """A stand-in monitor: puts scripted values in callback_metrics at validation epoch end."""

    def __init__(self, values: Dict[str, Sequence[float]]) -> None:
        self.values = values

    def on_validation_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        for key, seq in self.values.items():
            trainer.callback_metrics[key] = torch.tensor(float(seq[min(trainer.current_epoch, len(seq) - 1)]))


class DeadReLUMonitor(MetricLogger):
    """A stand-in for the real monitor: declares the keys the real one logs (the gate's order check
    finds providers by declared keys, not by class names)."""

    def declared_metrics(self):  # type: ignore[no-untyped-def]
        return (r"xai/dead_relu/.+",)


class FeatureDriftMonitor(MetricLogger):
    """A stand-in for the real monitor, declaring its drift keys."""

    def declared_metrics(self):  # type: ignore[no-untyped-def]
        return (r"xai/drift/.+",)
