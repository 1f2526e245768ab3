"""The whole callback suite on a small model, shared by the resume and the DDP tests."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

import pytorch_lightning as pl

from lightning_xai import ProbeSet, ProbeSpec, checks
from lightning_xai.callbacks import AttributionMonitor, DeadReLUMonitor, FeatureDriftMonitor, SanityGate

from .models import image_data


class SuiteCNN(nn.Module):
    """Two conv+ReLU blocks and a linear head; no BatchNorm/Dropout, so DDP and resumed runs train
    exactly like one uninterrupted process (no global RNG, no per-rank batch statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        return self.fc(nn.functional.relu(self.conv2(x)).flatten(1))


def masked_probe(n: int = 8, seed: int = 0) -> ProbeSet:
    """A probe of :func:`image_data` with the class quadrant as ground-truth mask."""
    ds = image_data(64)
    probe = ProbeSet.from_dataset(ds, n=n, seed=seed)
    masks = torch.zeros(n, 8, 8)
    for i, y in enumerate(probe.targets.tolist()):  # type: ignore[union-attr]
        r, c = divmod(int(y), 2)
        masks[i, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = 1
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


def xai_scalars(ea) -> dict:  # type: ignore[no-untyped-def]
    """``{tag: [(step, value), ...]}`` of every ``xai/`` scalar in an EventAccumulator."""
    return {
        tag: [(e.step, e.value) for e in ea.Scalars(tag)]
        for tag in sorted(ea.Tags()["scalars"])
        if tag.startswith("xai/")
    }


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


class OneThread(pl.Callback):
    """One intra-op thread in every (spawned) process: tiny tensors, and threads only spin-wait on a busy machine."""

    def setup(self, trainer, pl_module, stage):  # type: ignore[no-untyped-def]
        torch.set_num_threads(1)
