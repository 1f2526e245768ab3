"""Small models, data and a recording logger for the drift tests."""

from __future__ import annotations

import tempfile
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet

from .ddp_exit import with_exit_cleanup
from .models import CrossEntropySteps

FEATURES = ["age", "dose mg", "weight/kg", "noise a", "noise b", "noise c"]


def tabular_data(n: int = 96, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """Two classes decided by the first three features; the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(FEATURES), generator=g)
    y = ((x[:, 0] + 0.7 * x[:, 1] - 0.5 * x[:, 2]) > 0).long()
    return TensorDataset(x[: n // 2 + n // 4], y[: n // 2 + n // 4]), TensorDataset(x[n // 2 + n // 4 :], y[n // 2 + n // 4 :])


def tabular_probe(val: TensorDataset, n: int = 16) -> ProbeSet:
    return ProbeSet.from_dataset(val, n=n, seed=0, feature_names=FEATURES)


class TabularNet(CrossEntropySteps, pl.LightningModule):
    VAL_LOSS = "val_loss"

    def __init__(self, lr: float = 0.05, hidden: int = 16, dead: bool = False) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 2))
        if dead:  # a dead model: constant output, all-zero attributions, and it never learns
            with torch.no_grad():
                for p in self.net.parameters():
                    p.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyCNN(CrossEntropySteps, pl.LightningModule):
    VAL_LOSS = "val_loss"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.parameters(), lr=0.01)


def image_data(n: int = 48, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    for c in range(3):  # each class lights up its own block of the image
        x[y == c, 0, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3] += 1.0
    return TensorDataset(x[: n * 2 // 3], y[: n * 2 // 3]), TensorDataset(x[n * 2 // 3 :], y[n * 2 // 3 :])


def loaders(train: TensorDataset, val: TensorDataset, batch_size: int = 16) -> Tuple[DataLoader, DataLoader]:
    return DataLoader(train, batch_size=batch_size, shuffle=False), DataLoader(val, batch_size=64)


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call: ``records[tag] == [(step, value), ...]``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: Dict[str, List[Tuple[int, float]]] = {}

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        for k, v in metrics.items():
            self.records.setdefault(k, []).append((int(step or 0), float(v)))

    def series(self, prefix: str) -> Dict[str, List[Tuple[int, float]]]:
        return {k: v for k, v in self.records.items() if k.startswith(prefix)}


def trainer(callbacks: List[Any], max_epochs: int = 3, logger: Any = False, **kwargs: Any) -> pl.Trainer:
    # a run without a log dir writes its pictures under default_root_dir: never the working tree
    kwargs.setdefault("default_root_dir", tempfile.mkdtemp(prefix="xai-drift-test-"))
    return pl.Trainer(
        max_epochs=max_epochs,
        callbacks=with_exit_cleanup(callbacks, kwargs.get("strategy")),
        logger=logger,
        accelerator="cpu",
        devices=kwargs.pop("devices", 1),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        num_sanity_val_steps=kwargs.pop("num_sanity_val_steps", 0),
        deterministic=True,
        **kwargs,
    )
