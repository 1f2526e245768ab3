"""Multi-label targets (target="true" with multi-hot rows) and real-valued targets."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor
from lightning_xai.engine import AttributionEngine, Chunking, Shard

from .fixtures import LitMulti, multi_hot, trainer

captum = pytest.importorskip("captum.attr")


def _sum_of_labels(model: nn.Module, labels: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda x, w: (model(x) * w.float()).sum(1)


@pytest.mark.parametrize("method,opts", [("saliency", {}), ("integrated_gradients", {"n_steps": 8}), ("occlusion", {})])
def test_true_multi_hot_explains_the_sum_of_the_true_logits(method, opts):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.randn(6, 5), multi_hot()
    probe = ProbeSet(x, targets=y)
    assert probe.multilabel
    calls = F.resolve_methods({method: opts})
    maps = AttributionEngine().attributions(model, probe, calls, target="true")[method]
    fwd = _sum_of_labels(model, y)
    if method == "saliency":
        ref = captum.Saliency(fwd).attribute(x, additional_forward_args=(y,), abs=True)
    elif method == "integrated_gradients":
        ref = captum.IntegratedGradients(fwd).attribute(x, additional_forward_args=(y,), n_steps=8)
    else:
        ref = captum.Occlusion(fwd).attribute(x, sliding_window_shapes=(1,), additional_forward_args=(y,))
    assert maps.shape == x.shape and torch.allclose(maps, ref, atol=1e-6)
    for rank in (0, 1):  # sharded, chunked: the same rows
        shard = Shard(rank, 2, None)
        part = AttributionEngine().attributions(model, probe, calls, target="true", shard=shard, chunking=Chunking(2))
        assert torch.allclose(part[method], maps[shard.rows(6)], atol=1e-6)


def test_monitor_with_multi_label_targets(tmp_path):
    x, y = torch.randn(8, 5), multi_hot(8)
    monitor = AttributionMonitor(ProbeSet(x[:6], targets=y[:6]), methods=["saliency", "integrated_gradients"], target="true")
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    model = LitMulti()
    tr.fit(model, DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4))
    ref = captum.Saliency(_sum_of_labels(model.net, y[:6])).attribute(x[:6], additional_forward_args=(y[:6],), abs=True)
    assert torch.allclose(monitor.last_attributions["saliency"], ref, atol=1e-6)
    assert "xai/attr/saliency/gini" in tr.callback_metrics


def test_multi_hot_rows_from_a_dataset_and_a_clear_error():
    x, y = torch.randn(10, 5), multi_hot(10)
    probe = ProbeSet.from_dataset(TensorDataset(x, y), n=4)
    assert probe.multilabel and probe.targets.shape == (4, 4)
    with pytest.raises(ValueError, match="multi-hot"):
        ProbeSet(x, targets=y * 2)


def test_real_valued_targets_are_drawn_unstratified_with_one_notice():
    x, y = torch.randn(20, 3), torch.randn(20)
    with pytest.warns(UserWarning, match="without stratification") as record:
        probe = ProbeSet.from_dataset(TensorDataset(x, y), n=5, seed=1)
    assert len([w for w in record if "stratification" in str(w.message)]) == 1
    assert probe.indices == torch.randperm(20, generator=torch.Generator().manual_seed(1))[:5].tolist()
    items = [(x[i], y[i]) for i in range(20)]  # any dataset, not only a TensorDataset
    with pytest.warns(UserWarning, match="without stratification"):
        assert ProbeSet.from_dataset(items, n=5, seed=1).indices == probe.indices
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ProbeSet.from_dataset(TensorDataset(x, y), n=5, stratify=False)
        ProbeSet.from_dataset(TensorDataset(x, torch.arange(20) % 2), n=5)  # class indices: stratified, quiet
