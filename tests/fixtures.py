"""The tests' one fixtures module: a Trainer maker, data, small models, samplers, loggers, event readers.

Each helper is defined once here; a test module imports what it needs. The only other helper module
is ``helpers_gate.py``, which ``helpers_gate_ddp.py`` (a script run in a subprocess) imports on its
own, outside the test package, together with ``ddp_exit.py``.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as TF
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from lightning_xai import ProbeSet, ProbeSpec, checks
from lightning_xai.callbacks import (
    AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, FeatureVisualizationMonitor, SanityGate,
)

from .ddp_exit import with_exit_cleanup


# ================================================================================================ Trainer
def trainer(  # type: ignore[no-untyped-def]
    root=None, callbacks=(), max_epochs: int = 2, logger: Any = True, *, name: str = "run", version: Any = None, **kwargs
) -> pl.Trainer:
    """A quiet one-device CPU Trainer writing under ``root`` (a fresh temporary folder when None, never
    the working tree).

    ``logger=True`` makes a TensorBoardLogger at ``root/name/version``; ``False`` or a logger (list) is
    passed on. Defaults, each overridable by keyword: deterministic, no sanity validation, no
    checkpointing, no progress bar or model summary. A ``ddp*`` strategy gets the gloo exit clean-up
    callback of ``ddp_exit.py``.
    """
    root = str(root) if root is not None else tempfile.mkdtemp(prefix="xai-test-")
    if logger is True:
        logger = TensorBoardLogger(root, name=name, version=version)
    opts: Dict[str, Any] = dict(
        default_root_dir=root,
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
        num_sanity_val_steps=0,
    )
    opts.update(kwargs)
    return pl.Trainer(callbacks=with_exit_cleanup(callbacks, opts.get("strategy")), **opts)


# ================================================================================================ data
IMAGE_STYLES = ("quadrant", "blob", "diagonal", "noise")


def image_data(n: int = 96, classes: int = 4, seed: int = 0, *, style: str = "quadrant", size: int = 8) -> TensorDataset:
    """Random ``(n, 1, size, size)`` images and labels, drawn from a generator seeded with ``seed`` alone.

    Labels are ``arange(n) % classes`` and the class is written into the image, so a CNN can learn it:

    - ``"quadrant"``: noise ``0.3 * U[0, 1)``; class ``y`` (< 4) adds 0.7 to its quadrant
      (row, column = ``divmod(y, 2)``; see :func:`quadrant_masks`);
    - ``"blob"``: noise ``0.1 * U[0, 1)``; class ``y`` adds 1.0 to a 2x2 blob in the middle of its quadrant;
    - ``"diagonal"``: noise ``0.3 * N(0, 1)``; class ``y`` adds 1.0 to the 3x3 block at ``(2y, 2y)``;
    - ``"noise"``: ``U[0, 1)`` images and uniformly random labels (drawn after the images): nothing to learn.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1, size, size)
    if style == "noise":
        x = torch.rand(shape, generator=g)
        return TensorDataset(x, torch.randint(0, classes, (n,), generator=g))
    y = torch.arange(n) % classes
    if style == "diagonal":
        x = 0.3 * torch.randn(shape, generator=g)
        for c in range(classes):
            x[y == c, 0, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3] += 1.0
    elif style in ("quadrant", "blob"):
        x = torch.rand(shape, generator=g) * (0.3 if style == "quadrant" else 0.1)
        half = size // 2
        for i, c in enumerate(y.tolist()):
            r, k = divmod(c, 2)
            if style == "quadrant":
                x[i, 0, r * half : r * half + half, k * half : k * half + half] += 0.7
            else:
                x[i, 0, half * r + 1 : half * r + 3, half * k + 1 : half * k + 3] += 1.0
    else:
        raise ValueError(f"unknown style {style!r}; known: {IMAGE_STYLES}")
    return TensorDataset(x, y)


def quadrant_masks(targets: torch.Tensor, size: int = 8) -> torch.Tensor:
    """``(N, size, size)`` ground-truth masks of :func:`image_data`'s quadrants: 1 in class y's quadrant."""
    masks = torch.zeros(len(targets), size, size)
    half = size // 2
    for i, y in enumerate(targets.tolist()):
        r, c = divmod(int(y), 2)
        masks[i, r * half : r * half + half, c * half : c * half + half] = 1
    return masks


def split(ds: TensorDataset, k: int) -> Tuple[TensorDataset, TensorDataset]:
    """The first ``k`` rows and the rest, as two datasets (no shuffling)."""
    return TensorDataset(*(t[:k] for t in ds.tensors)), TensorDataset(*(t[k:] for t in ds.tensors))


FEATURES = ["age", "dose mg", "weight/kg", "noise a", "noise b", "noise c"]


def tabular_data(n: int = 96, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """Two classes decided by the first three :data:`FEATURES`; the rest is noise. Split 3:1 (train, val)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(FEATURES), generator=g)
    y = ((x[:, 0] + 0.7 * x[:, 1] - 0.5 * x[:, 2]) > 0).long()
    return split(TensorDataset(x, y), n // 2 + n // 4)


def tabular_probe(val: TensorDataset, n: int = 16) -> ProbeSet:
    return ProbeSet.from_dataset(val, n=n, seed=0, feature_names=FEATURES)


def dense_data(n: int = 24, d: int = 6, classes: int = 3, seed: int = 0) -> TensorDataset:
    """``U[0, 1)^d`` rows and uniformly random labels."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, d, generator=g), torch.randint(0, classes, (n,), generator=g))


def rank_split_data(n: int = 16) -> TensorDataset:
    """x0 = 1 everywhere; x1 = 1 on odd indices only. A non-shuffled DistributedSampler with 2 ranks
    gives rank 0 the even indices and rank 1 the odd ones, so unit 2 of RankNet fires on rank 1 only."""
    x = torch.zeros(n, 2)
    x[:, 0] = 1.0
    x[1::2, 1] = 1.0
    return TensorDataset(x, torch.arange(n) % 2)


def digits_tensors(n: int = 600):  # type: ignore[no-untyped-def]
    """scikit-learn digits as (N, 1, 8, 8) floats in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target[:n], dtype=torch.long)
    return x, y


def loader(ds: TensorDataset, batch_size: int = 8) -> DataLoader:
    """A DataLoader in dataset order."""
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def loaders(train: TensorDataset, val: TensorDataset, batch_size: int = 16, val_batch_size: int = 64) -> Tuple[DataLoader, DataLoader]:
    """Train and validation loaders, both in dataset order."""
    return loader(train, batch_size), DataLoader(val, batch_size=val_batch_size)


class Interleave(torch.utils.data.Sampler):
    """Rank r of w takes items r, r+w, ...: a DDP step (w x batch/w) then sees exactly one process's batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    @staticmethod
    def _rank_world():  # type: ignore[no-untyped-def]
        dist = torch.distributed
        return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)

    def __iter__(self):  # type: ignore[no-untyped-def]
        rank, world = self._rank_world()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        return self.n // self._rank_world()[1]


# ================================================================================================ models
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


class PlainCNN(nn.Module):
    """``conv1``, ``conv2``, ... (3x3, padding 1, each followed by a ReLU) and a linear head ``fc`` on
    (N, 1, size, size) images. No BatchNorm, Dropout or pooling, so DDP and resumed runs train exactly
    like one uninterrupted process (no global RNG, no per-rank batch statistics)."""

    def __init__(self, channels: Sequence[int] = (4,), classes: int = 4, size: int = 8) -> None:
        super().__init__()
        width = 1
        for i, out in enumerate(channels, 1):
            setattr(self, f"conv{i}", nn.Conv2d(width, out, 3, padding=1))
            width = out
        self.depth = len(channels)
        self.fc = nn.Linear(width * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = torch.relu(getattr(self, f"conv{i}")(x))
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    def __init__(self, features: int = 6, classes: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


class TwoBranchCNN(nn.Module):
    """Two candidate Grad-CAM layers (``block1.0`` and ``block2.0``, both with 8x8 outputs; ``block2`` pools after its conv)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(nn.functional.max_pool2d(self.block1(x), 1)))


def small_cnn(seed: int = 0) -> nn.Module:
    """A 10-class CNN for (N, 1, 8, 8) digits, initialised from ``seed`` (the global RNG is left as it was)."""
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
    """A LightningModule around any classifier ``net`` (cross-entropy, SGD with momentum, logs train/loss)."""

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


class Classifier(CrossEntropySteps, pl.LightningModule):
    """A LightningModule around ``net`` with :class:`CrossEntropySteps` (batches may carry extra items,
    e.g. masks) and plain SGD (or Adam); the validation loss is logged under the tag ``val_loss``."""

    def __init__(self, net: nn.Module, lr: float = 0.05, adam: bool = False, val_loss: str = "val/loss") -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.adam = adam
        self.VAL_LOSS = val_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return (torch.optim.Adam if self.adam else torch.optim.SGD)(self.parameters(), lr=self.lr)


class EpochMetricsCNN(pl.LightningModule):
    """:class:`PlainCNN` (one conv, 4 classes) logging loss and accuracy per epoch, for train and val:
    what the dashboard charts show."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = PlainCNN((4,), classes=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, on_step=False)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TabularNet(CrossEntropySteps, pl.LightningModule):
    """Linear-ReLU-Linear on the :data:`FEATURES`, 2 classes."""

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


# ------------------------------------------------------------------------ models with known dead ReLUs
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


def hooks_on(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


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


# ================================================================================================ several inputs, multi-label
class TwoInputs(nn.Module):
    """An image and a vector of metadata, and an integer mask over the 3 classes (riding along)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.meta = nn.Linear(4, 3)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.tanh(self.conv(image)).flatten(1)) * torch.sigmoid(self.meta(meta))
        return h.masked_fill(mask == 0, -1.0)


def two_input_data(n: int = 5):  # type: ignore[no-untyped-def]
    """``(image (N, 1, 6, 6), meta (N, 4), mask (N, 3) integers, targets (N,))`` for :class:`TwoInputs`."""
    g = torch.Generator().manual_seed(3)
    image, meta = torch.randn(n, 1, 6, 6, generator=g), torch.randn(n, 4, generator=g)
    mask = torch.ones(n, 3, dtype=torch.long)
    mask[1, 2] = 0
    return image, meta, mask, torch.arange(n) % 3


class LitTwo(pl.LightningModule):
    """:class:`TwoInputs` trained on ``(image, meta, mask, y)`` batches."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TwoInputs()

    def forward(self, image, meta, mask):  # type: ignore[no-untyped-def]
        return self.net(image, meta, mask)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        image, meta, mask, y = batch
        return nn.functional.cross_entropy(self(image, meta, mask), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TwoBranchReLU(pl.LightningModule):
    """``forward(image, meta, mask=None)``: an image branch (conv, ReLU; ``dead_channels`` never positive on
    images in [0, 1]) and a metadata branch (fc, ReLU; ``dead_units`` never positive on metadata in [0, 1]).
    An integer ``mask`` over the 3 classes (riding along) sets the masked classes' logits to -1; training
    batches ``(image, meta, y)`` carry none."""

    def __init__(self, dead_channels: Sequence[int] = (), dead_units: Sequence[int] = (), lr: float = 0.01) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_relu = nn.ReLU()
        self.meta = nn.Linear(3, 6)
        self.meta_relu = nn.ReLU()
        self.fc = nn.Linear(4 + 6, 3)
        self.lr = lr
        with torch.no_grad():
            sign = torch.ones(4)
            sign[list(dead_channels)] = -1.0
            self.conv.weight.copy_(sign[:, None, None, None] * 0.2)
            self.conv.bias.copy_(sign * 0.1)
        set_dead_linear(self.meta, list(dead_units))

    def forward(self, image: torch.Tensor, meta: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.conv_relu(self.conv(image)).mean((2, 3))
        out = self.fc(torch.cat([a, self.meta_relu(self.meta(meta))], 1))
        return out if mask is None else out.masked_fill(mask == 0, -1.0)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        image, meta, y = batch
        return TF.cross_entropy(self(image, meta), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def multi_hot(n: int = 6, k: int = 4) -> torch.Tensor:
    """``(n, k)`` multi-hot rows: label ``i % k`` on every row, ``(i + 2) % k`` too on odd rows."""
    y = torch.zeros(n, k, dtype=torch.long)
    for i in range(n):
        y[i, i % k] = 1
        y[i, (i + 2) % k] = 1 if i % 2 else 0
    return y


class LitMulti(pl.LightningModule):
    """An MLP on ``(N, 5)`` inputs with 4 sigmoid outputs (multi-label), trained on multi-hot rows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y.float())

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.01)


# ================================================================================================ the whole suite
def masked_probe(n: int = 8, seed: int = 0) -> ProbeSet:
    """A probe of ``image_data(64)`` with the class quadrant as ground-truth mask."""
    probe = ProbeSet.from_dataset(image_data(64), n=n, seed=seed)
    masks = quadrant_masks(probe.targets)  # type: ignore[arg-type]
    return ProbeSet(probe.inputs, probe.targets, masks=masks, indices=probe.indices)


def fails_from_epoch_one(ctx: checks.CheckContext) -> float:
    """A check value that fails (> 0.5) from epoch 1 on, so the gate's count of failures grows."""
    return float(ctx.epoch is not None and ctx.epoch >= 1)


GATE_CHECKS = ("finite", "dead_units", "relevance_mass/saliency", "random_logit/saliency", "drift/integrated_gradients/spearman/prev", "late")


def suite() -> List[object]:
    """AttributionMonitor, FeatureDriftMonitor, DeadReLUMonitor(source="probe") and SanityGate.

    Probes both ways: ``ProbeSpec`` (drawn from the validation data) and ``ProbeSet`` (with masks).
    """
    probe = masked_probe()
    return [
        AttributionMonitor(ProbeSpec(n=8, seed=1), methods=["saliency", "integrated_gradients", "grad_cam"], target="true"),
        FeatureDriftMonitor(probe, method={"integrated_gradients": {"n_steps": 16}}, reference="epoch:1", grid=4),
        DeadReLUMonitor(ProbeSpec(n=16, seed=2), source="probe"),
        SanityGate(
            probe,
            [
                checks.Finite(["saliency"]),
                checks.DeadUnits(0.9),
                checks.RelevanceMass("saliency", min_mass=0.0),
                checks.RandomLogit("saliency", max_similarity=1.0),
                checks.Drift("spearman", min_value=-1.0, method="integrated_gradients", against="prev", missing="skip"),
                checks.Custom(fails_from_epoch_one, "late", max_value=0.5),
            ],
            action="warn",
            patience=10,
            verbose=False,
        ),
    ]


def structured_data(n: int = 32, seed: int = 0) -> TensorDataset:
    """``(image (N, 1, 5, 5) ~ N(0, 1), meta (N, 3) in [0, 1), y = arange(n) % 3)`` for :class:`TwoBranchReLU`:
    the image channels are positive on part of the pixels (on-rates between 0 and 1 that training moves);
    on metadata in [0, 1) the model's ``dead_units`` are never positive."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 5, 5, generator=g), torch.rand(n, 3, generator=g), torch.arange(n) % 3)


STRUCTURED_CHECKS = (
    "finite", "dead_units", "random_logit/saliency", "parameter_randomization/saliency", "completeness",
    "spurious_region/saliency", "drift/saliency/spearman/prev", "late",
)


def structured_model() -> TwoBranchReLU:
    """The model of :func:`structured_suite`: :class:`TwoBranchReLU` with metadata units 0 and 4 dead, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoBranchReLU(dead_units=[0, 4], lr=0.05)


def structured_suite(n: int = 8, featvis: bool = False) -> List[object]:
    """The callbacks on probes of several inputs, for :func:`structured_model` and :func:`structured_data`.

    AttributionMonitor and FeatureDriftMonitor on a tuple probe ``(image, meta, mask)`` (the integer mask
    rides along; class 2 masked on row n // 2) with class targets; DeadReLUMonitor on a tuple ``(image, meta)``
    drawn from the validation data (``ProbeSpec(input_key=(0, 1))``); a second AttributionMonitor (occlusion,
    input x gradient; the predicted class), SanityGate (and, with ``featvis``, FeatureVisualizationMonitor) on
    a dict probe ``{"image", "meta"}`` with multi-hot targets.
    """
    image, meta, y = (t[:n] for t in structured_data().tensors)
    mask = torch.ones(n, 3, dtype=torch.long)
    mask[n // 2, 2] = 0
    rows = ProbeSet((image, meta, mask), targets=y)
    named = ProbeSet({"image": image, "meta": meta}, targets=multi_hot(n, 3))
    callbacks: List[object] = [
        AttributionMonitor(
            rows, methods={"saliency": {}, "integrated_gradients": {"n_steps": 8}, "smoothgrad": {"n_samples": 4}},
            target="true",
        ),
        AttributionMonitor(named, methods={"occlusion": {"window": 2}, "input_x_gradient": {}}, target="predicted"),
        FeatureDriftMonitor(rows, method="saliency", target="true", reference="epoch:1"),
        DeadReLUMonitor(ProbeSpec(n=8, seed=2, input_key=(0, 1), target_key=2), tau=0.1),
        SanityGate(
            named,
            [
                checks.Finite(["saliency"]),
                checks.DeadUnits(0.5),
                checks.RandomLogit("saliency", max_similarity=1.0),
                checks.ParameterRandomization("saliency", max_similarity=1.0, layers=["fc"]),
                checks.Completeness(max_error=1.0, n_steps=8),
                checks.SpuriousRegion(torch.tensor([1.0, 0.0, 0.0]), "saliency", max_mass=1.0, input="meta"),
                checks.Drift("spearman", min_value=-1.0, method="saliency", against="prev", missing="skip"),
                checks.Custom(fails_from_epoch_one, "late", max_value=0.5),
            ],
            target="true",
            action="warn",
            patience=10,
            verbose=False,
        ),
    ]
    if featvis:
        callbacks.append(FeatureVisualizationMonitor(probe=named, steps=16))
    return callbacks


class OneThread(pl.Callback):
    """One intra-op thread in every (spawned) process: tiny tensors, and threads only spin-wait on a busy machine."""

    def setup(self, trainer, pl_module, stage):  # type: ignore[no-untyped-def]
        torch.set_num_threads(1)


# ================================================================================================ a small logged run
def tiny_run(
    root: str,
    callbacks_factory: Any = None,
    epochs: int = 2,
    n_probe: int = 8,
    name: str = "run",
    loggers: Optional[Sequence[Any]] = None,
    trainer_kwargs: Optional[Dict[str, Any]] = None,
    **monitor_kwargs: Any,
) -> Dict[str, Any]:
    """Fit :class:`EpochMetricsCNN` on ``image_data(style="blob")`` for ``epochs`` with an
    AttributionMonitor (and ``callbacks_factory(probe)``) into ``root``.

    Returns ``{"trainer", "monitor", "log_dir", "probe", "model"}``.
    """
    pl.seed_everything(0)
    data = image_data(style="blob")
    probe = ProbeSet(data.tensors[0][:n_probe], targets=data.tensors[1][:n_probe])
    monitor_kwargs.setdefault("methods", {"saliency": {}, "integrated_gradients": {"n_steps": 8}})
    monitor = AttributionMonitor(probe, **monitor_kwargs)
    callbacks: List[Any] = [monitor]
    if callbacks_factory is not None:
        callbacks.extend(callbacks_factory(probe))
    logger = TensorBoardLogger(root, name=name, default_hp_metric=False)
    options: Dict[str, Any] = dict(logger=[logger, *(loggers or [])], log_every_n_steps=1, deterministic=None)
    options.update(trainer_kwargs or {})
    tr = trainer(root, callbacks, epochs, **options)
    model = EpochMetricsCNN()
    tr.fit(model, DataLoader(data, batch_size=32), DataLoader(data, batch_size=96))
    return {"trainer": tr, "monitor": monitor, "log_dir": logger.log_dir, "probe": probe, "model": model}


# ================================================================================================ loggers and event files
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


def read_events(log_dir: Any):  # type: ignore[no-untyped-def]
    """Every event file in ``log_dir`` read back with TensorBoard's own reader, nothing sampled away."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    return ea


def xai_scalars(ea) -> dict:  # type: ignore[no-untyped-def]
    """``{tag: [(step, value), ...]}`` of every ``xai/`` scalar in an EventAccumulator."""
    return {
        tag: [(e.step, e.value) for e in ea.Scalars(tag)]
        for tag in sorted(ea.Tags()["scalars"])
        if tag.startswith("xai/")
    }


def layouts_in(log_dir: str) -> List[Any]:
    """Every custom-scalars ``Layout`` proto written to ``log_dir``, parsed from the event files."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = read_events(log_dir)
    if "custom_scalars__config__" not in acc.Tags()["tensors"]:
        return []
    out = []
    for event in acc.Tensors("custom_scalars__config__"):
        layout = layout_pb2.Layout()
        layout.ParseFromString(event.tensor_proto.string_val[0])
        out.append(layout)
    return out


def texts_in(log_dir: str, tag: str) -> List[Any]:
    """``[(step, markdown)]`` of a text tag."""
    acc = read_events(log_dir)
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


def images_in(log_dir: str, tag: str) -> List[Any]:
    """``[(step, HxWx3 uint8 array)]`` of an image tag, each PNG decoded with Pillow."""
    import io

    import numpy as np
    from PIL import Image

    acc = read_events(log_dir)
    return [(e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))) for e in acc.Images(tag)]


def event_files(log_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*")))


# ================================================================================================ a real TensorBoard server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "*/*"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


class TensorBoardServer:
    """``python -m tensorboard.main`` on 127.0.0.1 at a free port, as a context manager (always stopped)."""

    def __init__(self, logdir: str, wait_s: float = 30.0, cwd: Optional[str] = None) -> None:
        self.logdir = logdir
        self.cwd = cwd
        self.wait_s = wait_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def __enter__(self) -> "TensorBoardServer":
        self._log = tempfile.TemporaryFile("w+")
        cmd = [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", self.logdir, "--host", "127.0.0.1", "--port", str(self.port),
            "--load_fast", "false", "--reload_interval", "1",
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd)
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}: {self.output()}")
            try:
                http_get(self.url + "/data/logdir", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"tensorboard did not answer on {self.url} within {self.wait_s}s: {self.output()}")

    def wait_for(self, path: str, predicate: Any, wait_s: float = 30.0) -> Any:
        """GET ``path`` (JSON) until ``predicate(json)`` holds (the server loads event files in the background)."""
        import json

        deadline = time.monotonic() + wait_s
        last: Any = None
        while time.monotonic() < deadline:
            last = json.loads(http_get(self.url + path))
            if predicate(last):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"{path} never satisfied the condition within {wait_s}s; last answer: {last!r}"[:2000])

    def json(self, path: str) -> Any:
        import json

        return json.loads(http_get(self.url + path))

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-2000:]

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> Optional[str]:
    for path in CHROMIUM_CANDIDATES:
        if os.path.exists(path) and os.access(path, os.X_OK):
            return path
    return None


def chromium(
    url: str, user_data_dir: str, *extra: str, window: str = "1400,1000", timeout: float = 60.0
) -> "subprocess.CompletedProcess[bytes]":
    """Run headless Chromium (Debian's package) once on ``url`` with the flags for a sandbox-less machine."""
    exe = chromium_path()
    assert exe is not None
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={user_data_dir}",
        f"--window-size={window}", *extra, url,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
