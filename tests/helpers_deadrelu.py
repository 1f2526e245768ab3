"""Small models and data with known dead ReLUs, for the DeadReLUMonitor tests (importable by spawned DDP workers)."""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as TF
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from .models import CrossEntropySteps

RELU_KINDS = (
    "module", "inplace", "relu6", "functional", "functional_inplace", "torch", "torch_", "tensor", "tensor_", "relu6_fn"
)


def _rectify(kind: str, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    if kind in ("module", "inplace", "relu6"):
        return module(x)
    if kind == "functional":
        return TF.relu(x)
    if kind == "functional_inplace":
        return TF.relu(x, inplace=True)
    if kind == "torch":
        return torch.relu(x)
    if kind == "torch_":
        return torch.relu_(x)
    if kind == "tensor":
        return x.relu()
    if kind == "tensor_":
        return x.relu_()
    if kind == "relu6_fn":
        return TF.relu6(x)
    raise ValueError(kind)


def set_dead_linear(fc: nn.Linear, dead: List[int]) -> None:
    """On inputs in [0, 1], the units in ``dead`` are negative on every input, the others positive."""
    with torch.no_grad():
        sign = torch.ones(fc.out_features)
        sign[dead] = -1.0
        fc.weight.copy_(sign[:, None] * torch.full_like(fc.weight, 0.5))
        fc.bias.copy_(sign * 0.1)


class DenseNet(pl.LightningModule):
    """x in [0,1]^d -> fc1 (n units; ``dead`` never positive) -> ReLU of ``kind`` -> fc2 -> classes."""

    def __init__(self, d: int = 6, n: int = 10, dead: List[int] = (), kind: str = "module", classes: int = 3,
                 lr: float = 0.05, dropout: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        self.fc1 = nn.Linear(d, n)
        self.act = {"module": nn.ReLU(), "inplace": nn.ReLU(inplace=True), "relu6": nn.ReLU6()}.get(kind, nn.Identity())
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(n, classes)
        set_dead_linear(self.fc1, list(dead))
        self.lr = lr
        self.forward_calls = 0
        self.forward_rows = 0
        self.hooks_in_training: List[bool] = []
        self.raise_when = None  # (epoch, rows) at which forward raises, for the exception tests

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        self.forward_rows += x.shape[0]
        if self.raise_when is not None and not self.training:
            epoch, rows = self.raise_when
            if self.current_epoch == epoch and (rows is None or x.shape[0] == rows):
                raise RuntimeError("forward exploded on purpose")
        return self.fc2(self.drop(_rectify(self.kind, self.fc1(x), self.act)))

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.hooks_in_training.append(hooks_on(self) or torch._C._len_torch_function_stack() > 0)
        x, y = batch
        return TF.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val_loss", TF.cross_entropy(self(x), y))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ConvNet(pl.LightningModule):
    """x in [0,1]^(1,H,W) -> conv (channels ``dead`` never positive) -> BatchNorm-free ReLU -> pool -> fc."""

    def __init__(self, channels: int = 8, dead: List[int] = (), classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels, classes)
        with torch.no_grad():
            sign = torch.ones(channels)
            sign[list(dead)] = -1.0
            self.conv.weight.copy_(sign[:, None, None, None] * 0.2)
            self.conv.bias.copy_(sign * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val_loss", TF.cross_entropy(self(x), y))


class NoReLUNet(DenseNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        return self.fc2(torch.tanh(self.fc1(x)))


class RankNet(CrossEntropySteps, pl.LightningModule):
    """fc1 has 3 units on x in {0,1}^2: unit 0 = x0 (fires on every sample), unit 1 never fires,
    unit 2 = x1 - 0.5 fires only where x1 = 1 (the odd-indexed samples of :func:`rank_split_data`)."""

    VAL_LOSS = "val_loss"
    SYNC_DIST = True

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 3)
        self.fc2 = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.0, -1.0, -0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(TF.relu(self.fc1(x)))

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.0)


def rank_split_data(n: int = 16) -> TensorDataset:
    """x0 = 1 everywhere; x1 = 1 on odd indices only. A non-shuffled DistributedSampler with 2 ranks
    gives rank 0 the even indices and rank 1 the odd ones, so unit 2 of RankNet fires on rank 1 only."""
    x = torch.zeros(n, 2)
    x[:, 0] = 1.0
    x[1::2, 1] = 1.0
    return TensorDataset(x, torch.arange(n) % 2)


def dense_data(n: int = 24, d: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, d, generator=g), torch.randint(0, classes, (n,), generator=g))


def image_data(n: int = 12, size: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 1, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def loader(ds: TensorDataset, batch_size: int = 8) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def hooks_on(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class BranchNet(RankNet):
    """RankNet plus a layer ``extra`` that only runs on batches holding a sample with x1 = 1 (rank 1's
    shard under 2-rank DDP): the ranks see different sets of ReLU layers."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(2, 4)
        with torch.no_grad():
            self.extra.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
            self.extra.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(TF.relu(self.fc1(x)))
        if bool((x[:, 1] > 0).any()):
            out = out + TF.relu(self.extra(x))[:, :2]
        return out
