"""Small models, data and scripted checks shared by the gate and checks tests."""

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


def trainer(callbacks: Sequence[pl.Callback], max_epochs: int, tmp_path: str, **kw) -> pl.Trainer:  # type: ignore[no-untyped-def]
    opts = dict(
        max_epochs=max_epochs, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        default_root_dir=str(tmp_path), num_sanity_val_steps=0,
    )
    opts.update(kw)
    return pl.Trainer(**opts)


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


def digits_tensors(n: int = 600):  # type: ignore[no-untyped-def]
    """scikit-learn digits as (N, 1, 8, 8) floats in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target[:n], dtype=torch.long)
    return x, y


def small_cnn(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )


def trained_digits_cnn(steps: int = 120, seed: int = 0) -> nn.Module:
    """A small CNN trained on digits in plain torch (a few seconds on CPU); ~90% train accuracy."""
    x, y = digits_tensors()
    model = small_cnn(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster on a busy machine
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(y), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model
