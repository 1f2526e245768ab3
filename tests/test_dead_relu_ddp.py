"""DeadReLUMonitor under real 2-process CPU DDP (gloo): counts are summed across ranks before deciding dead."""

from __future__ import annotations

import pytest
import torch

from .fixtures import BranchNet, RankNet, loader, rank_split_data, read_events, trainer
from lightning_xai import ProbeSet
from lightning_xai.callbacks import DeadReLUMonitor

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")


def _fit(tmp_path, monitor, val, devices, strategy, model=None):
    tr = trainer(tmp_path, [monitor], 1, name="tb", version=0, strategy=strategy, devices=devices, deterministic=None)
    tr.fit(model or RankNet(), loader(rank_split_data(8), batch_size=2), loader(val, batch_size=2))
    return tr, read_events(tmp_path / "tb" / "version_0")


def test_unit_that_fires_only_on_rank_1_is_not_dead(tmp_path):
    val = rank_split_data(16)
    # control: on rank 0's shard alone (the even samples) unit 2 never fires, so 2 of 3 units look dead
    even = torch.utils.data.TensorDataset(*(t[0::2] for t in val.tensors))
    mon = DeadReLUMonitor(source="validation")
    _fit(tmp_path / "one", mon, even, devices=1, strategy="auto")
    assert mon.last_summary.layers["fc1"].dead == 2

    # two ranks: rank 1's shard (the odd samples) makes unit 2 fire; only unit 1 is dead
    trainer, ea = _fit(tmp_path / "two", DeadReLUMonitor(source="validation"), val, devices=2, strategy="ddp_spawn")
    assert [e.value for e in ea.Scalars("xai/dead_relu/fc1")] == pytest.approx([1 / 3])  # written once
    assert ea.Scalars("xai/dead_relu/all")[-1].value == pytest.approx(1 / 3)
    # unit 0 fires on all 16 samples, unit 2 on the 8 odd ones (all of them on rank 1): 16 positions in total
    assert ea.Scalars("xai/dead_relu_onrate_mean/fc1")[-1].value == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    hist = ea.Histograms("xai/dead_relu_onrate/fc1")[-1].histogram_value
    assert hist.num == 3 and hist.sum == pytest.approx(1.5)
    assert float(trainer.callback_metrics["xai/dead_relu/all"]) == pytest.approx(1 / 3)


def test_probe_source_under_ddp(tmp_path):
    # the probe holds only even samples (unit 2 dead on it) and is the same on both ranks: summing the
    # ranks' counts must not change the fractions
    probe = ProbeSet(rank_split_data(8).tensors[0][0::2])
    trainer, ea = _fit(tmp_path, DeadReLUMonitor(probe, tau=0.0), rank_split_data(16), devices=2, strategy="ddp_spawn")
    assert [e.value for e in ea.Scalars("xai/dead_relu/fc1")] == pytest.approx([2 / 3])
    assert ea.Scalars("xai/dead_relu_dormant/all")[-1].value == pytest.approx(2 / 3)
    assert float(trainer.callback_metrics["xai/dead_relu/all"]) == pytest.approx(2 / 3)


def test_ranks_that_see_different_layers_are_merged_by_name(tmp_path):
    # `extra` runs on rank 1 only (data-dependent control flow): the layouts differ, so the counts are
    # gathered and merged by layer name instead of summed element-wise
    trainer, ea = _fit(tmp_path, DeadReLUMonitor(source="validation"), rank_split_data(16), devices=2,
                       strategy="ddp_spawn", model=BranchNet())
    assert ea.Scalars("xai/dead_relu/fc1")[-1].value == pytest.approx(1 / 3)
    # extra on rank 1's samples x = (1, 1): units 0 and 2 fire, 1 and 3 do not
    assert ea.Scalars("xai/dead_relu/extra")[-1].value == pytest.approx(2 / 4)
    assert ea.Scalars("xai/dead_relu/all")[-1].value == pytest.approx(3 / 7)
