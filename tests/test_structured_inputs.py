"""Models with several inputs: tuple and dict probes, riding tensors, the engine and a monitor."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbeSet, ProbeSpec
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor
from lightning_xai.engine import AttributionEngine, Shard

from .fixtures import LitTwo, TwoInputs, trainer, two_input_data

captum = pytest.importorskip("captum.attr")


CAPTUM = {
    "saliency": (lambda m: captum.Saliency(m), {}, {"abs": True}),
    "input_x_gradient": (lambda m: captum.InputXGradient(m), {}, {}),
    "integrated_gradients": (lambda m: captum.IntegratedGradients(m), {"n_steps": 12}, {"n_steps": 12}),
    "occlusion": (lambda m: captum.Occlusion(m), {"window": 2}, {"sliding_window_shapes": ((1, 2, 2), (2,)), "strides": ((1, 2, 2), (2,))}),
}


@pytest.mark.parametrize("method", list(CAPTUM))
def test_tuple_inputs_equal_captum_with_additional_forward_args(method):
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    make, ours, theirs = CAPTUM[method]
    maps = F.attribute(model, (image, meta, mask), y, method, **ours)
    ref = make(model).attribute((image, meta), target=y, additional_forward_args=(mask,), **theirs)
    assert isinstance(maps, tuple) and len(maps) == 3 and maps[2] is None
    for got, want in zip(maps[:2], ref):
        assert torch.allclose(got, want, atol=1e-6), method


def test_dict_inputs_and_the_captum_bridge():
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    kwargs = {"image": image, "meta": meta, "mask": mask}
    maps = F.attribute(model, kwargs, y, captum.IntegratedGradients, n_steps=12)
    assert sorted(maps) == ["image", "meta"]
    ref = captum.IntegratedGradients(model).attribute((image, meta), target=y, additional_forward_args=(mask,), n_steps=12)
    assert torch.allclose(maps["image"], ref[0], atol=1e-6) and torch.allclose(maps["meta"], ref[1], atol=1e-6)


def test_smoothgrad_rows_one_at_a_time_equal_one_batched_draw():
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    ones = torch.ones_like(mask)
    riding = F.attribute(model, (image, meta, ones), y, "smoothgrad", n_samples=4)  # riding mask: row by row
    batched = F.attribute(lambda_free(model), (image, meta), y, "smoothgrad", n_samples=4)  # no riding tensor: one call
    assert torch.allclose(riding[0], batched[0], atol=1e-6) and torch.allclose(riding[1], batched[1], atol=1e-6)


class _NoMask(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.model(image, meta, torch.ones(image.shape[0], 3, dtype=torch.long))


def lambda_free(model: nn.Module) -> nn.Module:
    return _NoMask(model)


def test_engine_shards_caches_and_chunks_structured_probes():
    model, (image, meta, mask, y) = TwoInputs(), two_input_data(6)
    probe = ProbeSet((image, meta, mask), targets=y)
    assert probe.kind == "structured" and len(probe) == 6
    calls = F.resolve_methods(["saliency", "integrated_gradients", "smoothgrad"])
    engine = AttributionEngine()
    whole = engine.attributions(model, probe, calls, target="true")
    engine.attributions(model, probe, calls, target="true")
    assert engine.computed["saliency"] == 1

    for rank in (0, 1):  # each rank's share (no gather: the share itself comes back) equals its rows of the whole
        shard = Shard(rank, 2, None)
        rows = shard.rows(6)
        got = AttributionEngine().attributions(model, probe, calls, target="true", shard=shard)
        for m in calls:
            for a, b in zip(got[m], whole[m]):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a.shape[0] == 3 and torch.allclose(a, b[rows], atol=1e-6), m
    from lightning_xai.engine import Chunking

    chunked = AttributionEngine().attributions(model, probe, calls, target="true", chunking=Chunking(2))
    for m in calls:
        assert all(a is None or torch.allclose(a, b, atol=1e-6) for a, b in zip(chunked[m], whole[m]))


def test_from_dataset_with_several_inputs_takes_the_right_target():
    image, meta, _, y = two_input_data(12)
    ds = TensorDataset(image, meta, y)
    probe = ProbeSet.from_dataset(ds, n=6, input_key=(0, 1))
    assert isinstance(probe.inputs, tuple) and probe.inputs[1].shape == (6, 4)
    assert torch.equal(probe.targets, y[torch.tensor(probe.indices)])
    explicit = ProbeSet.from_dataset(ds, n=6, input_key=(0, 1), target_key=2)
    assert explicit.fingerprint() == probe.fingerprint()
    dicts = [{"image": image[i], "meta": meta[i], "label": y[i]} for i in range(12)]
    named = ProbeSet.from_dataset(dicts, n=4, input_key=("image", "meta"), stratify=False)
    assert sorted(named.inputs) == ["image", "meta"] and named.targets is not None
    loader_probe = ProbeSpec(n=4, input_key=[0, 1], target_key=2).build_from(DataLoader(ds, batch_size=5))
    assert isinstance(loader_probe.inputs, tuple) and len(loader_probe) == 4
    with pytest.raises(ValueError, match="same number of samples"):
        ProbeSet((image, meta[:3]))


def test_attribution_monitor_summarises_each_input(tmp_path):
    image, meta, mask, y = two_input_data(8)
    ds = TensorDataset(image, meta, mask, y)
    probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
    monitor = AttributionMonitor(probe, methods=["saliency", "integrated_gradients"], target="true")
    drift = FeatureDriftMonitor(probe, method="saliency", target="true")
    tr = trainer(tmp_path, [monitor, drift], max_epochs=2)
    model = LitTwo()
    tr.fit(model, DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    keys = set(tr.callback_metrics)
    assert {"xai/attr/saliency/input0/gini", "xai/attr/saliency/input1/gini", "xai/attr/integrated_gradients/input1/top10_mass"} <= keys
    assert not any(k.startswith("xai/attr/saliency/input2") for k in keys)  # the mask rides along
    ref = F.attribute(model.net, probe.inputs, probe.targets, "saliency")
    assert torch.allclose(monitor.last_attributions["saliency"][0], ref[0], atol=1e-6)
    # drift over the attributed inputs' features, concatenated: 36 image pixels then 4 metadata values
    assert len(drift.history) == 2 and drift._names[0] == "input0/f0" and drift._names[-1] == "input1/f3"
    assert len(drift._names) == 36 + 4
    assert any(k.startswith("xai/drift/saliency/") for k in tr.callback_metrics)
    with pytest.raises(ValueError, match="reference needs a probe of one input"):
        FeatureDriftMonitor(probe, method="saliency", reference=torch.zeros(40))
