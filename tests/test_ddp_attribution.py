"""AttributionMonitor under real 2-process DDP (gloo, CPU): sharded probe, same maps as one process."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.functional import attribute, count_passes

from .fixtures import Interleave, LitClassifier, PlainCNN, image_data, read_events, trainer

METHODS = ["saliency", "grad_cam", "integrated_gradients", "smoothgrad", "occlusion"]


class SaveMaps(pl.Callback):
    """Saves each rank's view of the monitor's maps and how many rows it explained itself."""

    def __init__(self, monitor: AttributionMonitor, out_dir: str) -> None:
        self.monitor, self.out_dir = monitor, out_dir
        self.rows = 0
        self._counter = None

    def on_validation_epoch_start(self, trainer, pl_module):
        self._ctx = count_passes()
        self._counter = self._ctx.__enter__()

    def on_validation_epoch_end(self, trainer, pl_module):  # runs after the monitor (list order)
        self._ctx.__exit__(None, None, None)
        maps = {k: v.cpu() for k, v in self.monitor.last_attributions.items()}
        # the same methods on the whole probe in this process, unsharded, for comparison
        probe = self.monitor.probe
        target = probe.targets if self.monitor.target == "true" else self.monitor._resolve_target(trainer, pl_module)
        whole = {
            m: attribute(pl_module, probe.inputs, target, m, **({"shard": (0, len(probe))} if m == "smoothgrad" else {}))
            for m in METHODS
        }
        torch.save(
            {"maps": maps, "whole": whole, "backward_rows": self._counter.backward_rows},
            os.path.join(self.out_dir, f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt"),
        )


def _run(tmp_path, devices: int, n: int = 10, target: str = "true"):
    pl.seed_everything(3)
    ds = image_data(64)
    probe = ProbeSet.from_dataset(ds, n=n, seed=0)
    monitor = AttributionMonitor(probe, methods=METHODS, target=target)
    out = tmp_path / f"maps{devices}"
    out.mkdir()
    kwargs = {"strategy": "ddp_spawn", "devices": 2} if devices == 2 else {}
    tr = trainer(
        tmp_path / f"run{devices}", [monitor, SaveMaps(monitor, str(out))], max_epochs=2,
        use_distributed_sampler=False, **kwargs,
    )
    torch.manual_seed(0)
    model = LitClassifier(PlainCNN())  # no BatchNorm/Dropout: DDP (2 x 16) trains like one process (32)
    loader = DataLoader(ds, batch_size=32 // devices, sampler=Interleave(len(ds)))
    tr.fit(model, loader, loader)
    return tr, out


def test_ddp_shards_probe_and_logs_the_same_values_once(tmp_path):
    single, single_out = _run(tmp_path, devices=1)
    ddp, ddp_out = _run(tmp_path, devices=2)
    ref = torch.load(single_out / "rank0_epoch1.pt")
    for rank in (0, 1):
        got = torch.load(ddp_out / f"rank{rank}_epoch1.pt")
        for m in METHODS:
            a = got["maps"][m]
            # every rank holds the whole gathered result, equal to the unsharded maps of its weights...
            assert torch.allclose(a, got["whole"][m], rtol=1e-5, atol=1e-6 * float(a.abs().max())), m
            # ...and to the single-process run's maps (same training, up to float summation order)
            b = ref["maps"][m]
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max())), m
        # each rank explained its half of the probe: 5 of 10 samples (for IG: 32 steps x 5 rows, ...)
        assert got["backward_rows"] * 2 == ref["backward_rows"]
    # one event stream, one value per tag and epoch, equal to the single-process values
    ea_single = read_events(single.logger.log_dir)
    ea_ddp = read_events(os.path.join(str(tmp_path / "run2"), "run", "version_0"))
    for m in METHODS:
        tag = f"xai/attr/{m}/gini"
        s, d = ea_single.Scalars(tag), ea_ddp.Scalars(tag)
        assert [e.step for e in d] == [e.step for e in s] == [2, 4]
        assert [e.value for e in d] == pytest.approx([e.value for e in s], rel=1e-3)
        assert len(ea_ddp.Images(f"xai/attr/{m}")) == 2


def test_ddp_uneven_shards_with_the_predicted_target(tmp_path):
    """7 probe samples on 2 ranks (4 + 3, padded for the gather), target resolved per epoch."""
    ddp, ddp_out = _run(tmp_path, devices=2, n=7, target="predicted")
    for rank in (0, 1):
        got = torch.load(ddp_out / f"rank{rank}_epoch1.pt")
        for m in METHODS:
            a = got["maps"][m]
            assert a.shape[0] == 7
            assert torch.allclose(a, got["whole"][m], rtol=1e-5, atol=1e-6 * float(a.abs().max())), m
