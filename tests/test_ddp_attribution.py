"""AttributionMonitor under real 2-process DDP (gloo, CPU): sharded probe, same maps as one process."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

import pytorch_lightning as pl

from lightning_xai import ProbeSet
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.functional import attribute, count_passes, map_tensors

from .fixtures import Interleave, LitClassifier, PlainCNN, image_data, read_events, trainer
from .testers import DICT_MASKS, OCCLUSION_DDP_RTOL, TUPLE_MASKS, rel_err

METHODS = ["saliency", "grad_cam", "integrated_gradients", "smoothgrad", "occlusion"]


class SaveMaps(pl.Callback):
    """Saves each rank's view of the monitor's maps and how many rows it explained itself, in
    ``<prefix>rank<r>_epoch<e>.pt``."""

    def __init__(self, monitor: AttributionMonitor, out_dir: str, prefix: str = "") -> None:
        self.monitor, self.out_dir, self.prefix = monitor, out_dir, prefix
        self.rows = 0
        self._counter = None

    def on_validation_epoch_start(self, trainer, pl_module):
        self._ctx = count_passes()
        self._counter = self._ctx.__enter__()

    def on_validation_epoch_end(self, trainer, pl_module):  # runs after the monitor (list order)
        self._ctx.__exit__(None, None, None)
        maps = {k: map_tensors(lambda t: t.cpu(), v) for k, v in self.monitor.last_attributions.items()}
        # the same methods on the whole probe in this process, unsharded, for comparison
        probe = self.monitor.probe
        target = probe.targets if self.monitor.target == "true" else self.monitor._resolve_target(trainer, pl_module)
        whole = {
            m: attribute(pl_module, probe.inputs, target, m, **options,
                         **({"shard": (0, len(probe))} if m == "smoothgrad" else {}))
            for m, options in self.monitor.methods.items()
        }
        torch.save(
            {"maps": maps, "whole": whole, "backward_rows": self._counter.backward_rows},
            os.path.join(self.out_dir, f"{self.prefix}rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt"),
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


def _structured_methods(masks):  # type: ignore[no-untyped-def]
    return {"saliency": {}, "integrated_gradients": {"n_steps": 8}, "smoothgrad": {"n_samples": 3}, "grad_cam": {},
            "occlusion": {}, "kernel_shap": {"n_samples": 16, "feature_mask": masks},
            "gradient_shap": {"n_samples": 3, "noise": 0.1}}


def test_ddp_shards_tuple_and_dict_probes_through_the_monitors(tmp_path):
    """Probes of several inputs (a riding mask), 7 samples on 2 ranks (4 + 3): each rank explains its rows, and
    the maps both ranks gather, in the probe's structure, equal the whole probe's in one process."""
    from torch.utils.data import TensorDataset

    from lightning_xai.callbacks import FeatureDriftMonitor

    from .test_structured_inputs import LitTwo, two_input_data

    image, meta, mask, y = two_input_data(16)
    rows = slice(0, 7)
    as_tuple = ProbeSet((image[rows], meta[rows], mask[rows]), targets=y[rows])
    as_dict = ProbeSet({"image": image[rows], "meta": meta[rows], "mask": mask[rows]}, targets=y[rows])
    monitors = {
        "tuple_": AttributionMonitor(as_tuple, methods=_structured_methods(TUPLE_MASKS), target="predicted"),
        "dict_": AttributionMonitor(as_dict, methods=_structured_methods(DICT_MASKS), target="true"),
    }
    drift = FeatureDriftMonitor(as_dict, method="saliency", target="true")
    out = tmp_path / "maps"
    out.mkdir()
    savers = [SaveMaps(mon, str(out), prefix) for prefix, mon in monitors.items()]
    tr = trainer(tmp_path / "run", [*monitors.values(), drift, *savers], max_epochs=2, strategy="ddp_spawn", devices=2,
                 use_distributed_sampler=False)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(image, meta, mask, y), batch_size=8)
    tr.fit(LitTwo(), loader, loader)
    for prefix in monitors:
        got = [torch.load(out / f"{prefix}rank{rank}_epoch1.pt") for rank in (0, 1)]
        for m in _structured_methods(None):
            for rank in (0, 1):
                maps = got[rank]["maps"][m]
                assert type(maps) is type(as_tuple.inputs if prefix == "tuple_" else as_dict.inputs), (prefix, m)
                assert rel_err(maps, got[rank]["whole"][m]) <= OCCLUSION_DDP_RTOL, (prefix, m, rank)
            assert rel_err(got[0]["maps"][m], got[1]["maps"][m]) == 0, (prefix, m)  # every rank holds the same maps
    # each rank explained its share of both probes, 4 and 3 rows (the first saver's count closes before any
    # unsharded comparison runs)
    rows = [torch.load(out / f"tuple_rank{rank}_epoch1.pt")["backward_rows"] for rank in (0, 1)]
    assert rows[0] > 0 and rows[0] * 3 == rows[1] * 4, rows
    ea = read_events(os.path.join(str(tmp_path / "run"), "run", "version_0"))
    tags = set(ea.Tags()["scalars"])
    assert {"xai/attr/grad_cam/input0/gini", "xai/attr/grad_cam/image/gini", "xai/attr/kernel_shap/meta/gini"} <= tags
    assert not any(t.startswith("xai/attr/grad_cam/input1") or t.startswith("xai/attr/grad_cam/meta") for t in tags)
    assert any(t.startswith("xai/drift/saliency/") for t in tags)
