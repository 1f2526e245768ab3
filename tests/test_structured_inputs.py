"""Models with several inputs: tuple and dict probes, riding tensors, the engine and a monitor."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl

from lightning_xai import ProbeSet, ProbeSpec
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor
from lightning_xai.engine import AttributionEngine, Shard

from .fixtures import LitTwo, TwoInputs, read_events, trainer, two_input_data, xai_scalars
from .testers import TUPLE_MASKS, captum_fed_kernel_shap, rel_err

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


# ----------------------------------------------------------------------------------------------
# Grad-CAM on several inputs: the map at the layer, upsampled to the inputs that feed the layer
# ----------------------------------------------------------------------------------------------
def _captum_cam(model, image, meta, mask, y, layer):  # type: ignore[no-untyped-def]
    return captum.LayerGradCam(model, layer).attribute((image, meta), target=y, additional_forward_args=(mask,),
                                                        relu_attributions=True)


def test_grad_cam_on_tuple_and_dict_inputs_equals_captum():
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    cam = _captum_cam(model, image, meta, mask, y, model.conv)
    # bilinear, as the single-input Grad-CAM oracle (tests/testers.py oracle_grad_cam), broadcast over channels
    up = captum.LayerAttribution.interpolate(cam, (6, 6), interpolate_mode="bilinear").expand_as(image)
    maps = F.attribute(model, (image, meta, mask), y, "grad_cam", layer="conv")
    assert isinstance(maps, tuple) and maps[1] is None and maps[2] is None  # the conv layer never sees meta
    assert maps[0].shape == image.shape and float(maps[0].abs().max()) > 0
    assert torch.allclose(maps[0], up, atol=1e-6)
    named = F.attribute(model, {"image": image, "meta": meta, "mask": mask}, y, "grad_cam")  # default: last conv
    assert list(named) == ["image"] and torch.allclose(named["image"], up, atol=1e-6)
    raw = F.attribute(model, (image, meta, mask), y, "grad_cam", upsample=False)  # the layer's map, one tensor
    assert isinstance(raw, torch.Tensor) and raw.shape == (5, 1, 6, 6) and torch.allclose(raw, cam, atol=1e-6)


@pytest.mark.parametrize("cls", ["LayerGradCam", "LayerActivation"])
def test_captum_layer_classes_on_several_inputs_go_to_the_inputs_that_feed_the_layer(cls):
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    method = getattr(captum, cls)
    explainer = method(model, model.conv)
    raw = explainer.attribute((image, meta), additional_forward_args=(mask,), **({"target": y} if cls == "LayerGradCam" else {}))
    # channels summed, interpolated as Grad-CAM's, over the image only
    up = captum.LayerAttribution.interpolate(raw.sum(1, keepdim=True), (6, 6), interpolate_mode="bilinear")
    maps = F.attribute(model, (image, meta, mask), y, method, layer="conv")
    assert maps[1] is None and maps[2] is None and torch.allclose(maps[0], up.expand_as(image), atol=1e-6)
    assert torch.allclose(F.attribute(model, (image, meta, mask), y, method, layer="conv", upsample=False), raw, atol=1e-6)


class MetaScaledConv(nn.Module):
    """The metadata scales the image before a strided conv: the conv depends on both inputs; a second conv on
    the metadata alone (as a 1-pixel image) is seen by the image-free branch only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.meta_conv = nn.Conv1d(1, 2, 1)
        self.fc = nn.Linear(3 * 3 * 3 + 2 * 4, 3)

    def forward(self, image, meta, mask):  # type: ignore[no-untyped-def]
        h = self.conv(image * meta.mean(1).view(-1, 1, 1, 1))
        m = self.meta_conv(meta.unsqueeze(1))
        return self.fc(torch.cat([h.flatten(1), m.flatten(1)], 1)).masked_fill(mask == 0, -1.0)


def test_grad_cam_follows_autograd_connectivity_and_names_the_input_it_cannot_upsample_to():
    model, (image, meta, mask, y) = MetaScaledConv(), two_input_data()
    assert F.inputs_feeding(model, (image, meta, mask), model.conv) == [0, 1]
    assert F.inputs_feeding(model, {"image": image, "meta": meta, "mask": mask}, model.meta_conv) == ["meta"]
    # the strided conv's 3x3 map is upsampled to the image; the metadata feeds it too but has no pixels
    with pytest.raises(ValueError, match=r"input 'input1' feeds the layer 'conv': cannot upsample a Grad-CAM map"
                                         r".*pass upsample=False"):
        F.attribute(model, (image, meta, mask), y, "grad_cam", layer="conv")
    raw = F.attribute(model, (image, meta, mask), y, "grad_cam", layer="conv", upsample=False)
    assert torch.allclose(raw, _captum_cam(model, image, meta, mask, y, model.conv), atol=1e-6)
    # a Conv1d over the metadata as a 1 x 4 signal: linear upsampling to the (N, 4) vector is not possible either
    with pytest.raises(ValueError, match="feeds the layer 'meta_conv'"):
        F.attribute(model, (image, meta, mask), y, "grad_cam", layer="meta_conv")


class MaskOnlyLayer(TwoInputs):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Conv1d(1, 1, 1)

    def forward(self, image, meta, mask):  # type: ignore[no-untyped-def]
        return super().forward(image, meta, mask) * torch.sigmoid(self.gate(mask.float().unsqueeze(1))).squeeze(1)


def test_grad_cam_at_a_layer_no_attributed_input_feeds_says_so():
    model, (image, meta, mask, y) = MaskOnlyLayer(), two_input_data()
    assert F.inputs_feeding(model, (image, meta, mask), model.gate) == []
    with pytest.raises(ValueError, match=r"the layer 'gate' depends on none of the attributed .*input0.*pass upsample=False"):
        F.attribute(model, (image, meta, mask), y, "grad_cam", layer="gate")


def test_grad_cam_monitor_and_drift_on_several_inputs_with_a_real_trainer(tmp_path):
    image, meta, mask, y = two_input_data(8)
    ds = TensorDataset(image, meta, mask, y)
    probe = ProbeSet((image[:4], meta[:4], mask[:4]), targets=y[:4])
    monitor = AttributionMonitor(probe, methods={"grad_cam": {"layer": "net.conv"}, "saliency": {}}, target="true")
    at_layer = AttributionMonitor(probe, methods={"grad_cam": {"upsample": False}}, target="true")
    drift = FeatureDriftMonitor(probe, method="grad_cam", target="true")
    tr = trainer(tmp_path, [monitor, at_layer, drift], max_epochs=2)
    model = LitTwo()
    with pytest.warns(UserWarning, match="no picture for grad_cam's maps of shape .*layer's resolution.*drop upsample=False"):
        tr.fit(model, DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))
    assert at_layer.last_attributions["grad_cam"].shape == (4, 1, 6, 6)  # one tensor: the layer's maps
    maps = monitor.last_attributions["grad_cam"]
    up = captum.LayerAttribution.interpolate(
        _captum_cam(model.net.eval(), *probe.inputs, probe.targets, model.net.conv), (6, 6), interpolate_mode="bilinear"
    )
    assert maps[1] is None and torch.allclose(maps[0], up.expand_as(maps[0]), atol=1e-6)
    scalars = xai_scalars(read_events(tr.logger.log_dir))
    assert [s for s, _ in scalars["xai/attr/grad_cam/input0/gini"]] == [s for s, _ in scalars["xai/attr/saliency/input0/gini"]]
    assert len(scalars["xai/attr/grad_cam/input0/gini"]) == len(scalars["xai/attr/grad_cam/gini"]) == 2
    assert not any(k.startswith("xai/attr/grad_cam/input1") for k in scalars)  # the conv never sees the metadata
    assert "xai/attr/saliency/input1/gini" in scalars
    # drift over the features of the inputs that have maps: the 36 pixels of the image
    assert len(drift.history) == 2 and drift._names == [f"input0/f{i}" for i in range(36)]
    assert any(k.startswith("xai/drift/grad_cam/") for k in scalars)


def test_grad_cam_layer_that_cannot_be_upsampled_fails_at_setup(tmp_path):
    image, meta, mask, y = two_input_data(4)
    ds = TensorDataset(image, meta, mask, y)
    probe = ProbeSet((image, meta, mask), targets=y)
    monitor = AttributionMonitor(probe, methods={"grad_cam": {"layer": "net.meta"}}, target="true")
    tr = trainer(tmp_path, [monitor], max_epochs=1, logger=False)
    with pytest.raises(ValueError, match=r"method 'grad_cam' .* fails on one probe sample .*input 'input1' feeds the "
                                         r"layer 'net.meta'.*pass upsample=False"):
        tr.fit(LitTwo(), DataLoader(ds, batch_size=4), DataLoader(ds, batch_size=4))


# ----------------------------------------------------------------------------------------------
# SHAP and LIME on several inputs: features across the inputs (the full matrix: tests/testers.py)
# ----------------------------------------------------------------------------------------------
def test_feature_masks_of_several_inputs_are_captums_and_bad_ones_are_named():
    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    image_ids, meta_ids = TUPLE_MASKS
    assert F.flat_feature_mask(TUPLE_MASKS, (image, meta, mask)).tolist() == [[0] * 18 + [1] * 18 + [2, 2, 3, 0]]
    exact = F.attribute(model, (image, meta, mask), y, "kernel_shap", n_samples=16, feature_mask=(image_ids, meta_ids, None))
    ref = captum.ShapleyValues(model).attribute((image, meta), target=y, additional_forward_args=(mask,),
                                                feature_mask=(image_ids.unsqueeze(0), meta_ids.view(1, 4)))
    assert exact[2] is None and rel_err(exact, (ref[0], ref[1], None)) <= 1e-5
    assert torch.equal(exact[0][:, :, 0, 0], exact[1][:, 3:])  # one feature spans the image's top half and meta[3]
    with pytest.raises(ValueError, match=r"one mask per attributed input \(input0, input1\).*missing: input1"):
        F.attribute(model, (image, meta, mask), y, "kernel_shap", feature_mask=(image_ids,))
    with pytest.raises(ValueError, match=r"takes the inputs' structure \(tuple of masks\); got a dict"):
        F.attribute(model, (image, meta, mask), y, "lime", feature_mask={"image": image_ids, "meta": meta_ids})
    with pytest.raises(ValueError, match=r"feature_mask of input 'meta': feature_mask of shape \(5,\) does not fit"):
        F.attribute(model, {"image": image, "meta": meta, "mask": mask}, y, "feature_ablation",
                    feature_mask={"image": image_ids, "meta": torch.zeros(5, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"not attributed: mask"):
        F.attribute(model, {"image": image, "meta": meta, "mask": mask}, y, "feature_ablation",
                    feature_mask={"image": image_ids, "meta": meta_ids, "mask": meta_ids})


@pytest.mark.filterwarnings("ignore:You are providing multiple inputs")
def test_sampled_kernel_shap_on_several_inputs_is_efficient_and_near_captum():
    """Sampled (40 features, one per value), the maps are exactly efficient and near Captum's KernelShap fed the
    same coalitions, not equal to 1e-5: Captum fits its regression in float32 (``lime.py`` casts the coalitions,
    outputs and weights with ``.float()``) with the end points weighted 1e6, which costs it about 1e-3 of the map
    here (1e-2 on the tester's model). Exact cases equal Captum's ShapleyValues (tests/testers.py)."""
    from lightning_xai.functional import perturbation as P

    model, (image, meta, mask, y) = TwoInputs(), two_input_data()
    with torch.no_grad():
        gain = (model(image, meta, mask) - model(torch.zeros_like(image), torch.zeros_like(meta), mask)).gather(1, y[:, None])
    maps = F.attribute(model, (image, meta, mask), y, "kernel_shap", n_samples=64, seed=1)
    torch.testing.assert_close(maps[0].flatten(1).sum(1) + maps[1].sum(1), gain[:, 0], atol=1e-6, rtol=1e-5)
    z = P._kernel_samples(40, 64, torch.Generator().manual_seed(1))  # what kernel_shap(seed=1) draws
    ref = captum_fed_kernel_shap(model, z).attribute((image, meta), target=y, n_samples=len(z),
                                                      additional_forward_args=(mask,))
    assert 0 < rel_err(maps, (ref[0], ref[1], None)) <= 2e-3


def _fit_two(root, callbacks):  # type: ignore[no-untyped-def]
    image, meta, mask, y = two_input_data(16)
    pl.seed_everything(5)
    model = LitTwo()
    tr = trainer(root, callbacks, max_epochs=2, logger=False)
    ds = TensorDataset(image, meta, mask, y)
    tr.fit(model, DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=8))
    return model, torch.random.get_rng_state()


def test_observing_several_inputs_never_perturbs_training(tmp_path):
    """Every built-in method on a tuple probe (Grad-CAM's connectivity pass included): the same weights, bit for
    bit, and the same global random stream as training without the monitor."""
    image, meta, mask, y = two_input_data(6)
    probe = ProbeSet((image, meta, mask), targets=y)
    methods = {m: {"n_samples": 4} if m in ("kernel_shap", "lime", "shapley_sampling", "gradient_shap", "smoothgrad")
               else {} for m in F.METHODS}
    without, rng_without = _fit_two(tmp_path / "a", [])
    monitor = AttributionMonitor(probe, methods=methods)
    with_cb, rng_with = _fit_two(tmp_path / "b", [monitor])
    assert sorted(monitor.last_attributions) == sorted(F.METHODS)  # every method explained the probe
    for k, v in without.state_dict().items():
        assert torch.equal(v, with_cb.state_dict()[k]), k
    assert torch.equal(rng_without, rng_with)
