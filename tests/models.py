"""Small models and data shared by the tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from .ddp_exit import with_exit_cleanup


class CrossEntropySteps:
    """Training and validation steps for the tests' LightningModules (put it first in the bases).

    Batches are ``(x, y, ...)``; the training step returns the cross-entropy, the validation step
    logs it as ``VAL_LOSS`` (with ``sync_dist=SYNC_DIST``). Each module keeps its own optimizer.
    """

    VAL_LOSS = "val/loss"
    SYNC_DIST = False

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return nn.functional.cross_entropy(self(batch[0]), batch[1])  # type: ignore[operator]

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])  # type: ignore[operator]
        self.log(self.VAL_LOSS, loss, sync_dist=self.SYNC_DIST)  # type: ignore[attr-defined]


class SmallCNN(nn.Module):
    """Conv + BatchNorm + ReLU(inplace) + Dropout: the shape of a typical image classifier."""

    def __init__(self, classes: int = 4, channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(self.drop(x.flatten(1)))


class MLP(nn.Module):
    def __init__(self, features: int = 6, classes: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


class TwoBranchCNN(nn.Module):
    """Two candidate Grad-CAM layers at different resolutions (``block1.0`` at 8x8, ``block2.0`` at 4x4)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(nn.functional.max_pool2d(self.block1(x), 1)))


def trained_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


class LitClassifier(pl.LightningModule):
    """A LightningModule around any classifier ``net`` (cross-entropy, SGD with momentum)."""

    def __init__(self, net: nn.Module, lr: float = 0.05) -> None:
        super().__init__()
        self.net = net
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def image_data(n: int = 96, classes: int = 4, seed: int = 0) -> TensorDataset:
    """Random 1x8x8 images whose class is written into a bright quadrant, so a CNN can learn it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 0.7
    return TensorDataset(x, y)


def loaders(ds: TensorDataset, batch_size: int = 32):  # type: ignore[no-untyped-def]
    return DataLoader(ds, batch_size=batch_size, shuffle=False), DataLoader(ds, batch_size=batch_size)


def trainer(tmp_path, callbacks=(), max_epochs: int = 2, logger=True, **kwargs) -> pl.Trainer:  # type: ignore[no-untyped-def]
    from pytorch_lightning.loggers import TensorBoardLogger

    return pl.Trainer(
        default_root_dir=str(tmp_path),
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=kwargs.pop("devices", 1),
        logger=TensorBoardLogger(str(tmp_path), name="run") if logger is True else logger,
        callbacks=with_exit_cleanup(callbacks, kwargs.get("strategy")),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=kwargs.pop("deterministic", True),
        num_sanity_val_steps=kwargs.pop("num_sanity_val_steps", 0),
        **kwargs,
    )


def read_events(log_dir: str):  # type: ignore[no-untyped-def]
    """Read a run's event files back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return ea
