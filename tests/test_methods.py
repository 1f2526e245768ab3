"""The one method table: every place a method is named accepts the same things, options are checked
at construction, Captum classes (subclasses too) work through a real Trainer, and a user's own method
and renderer plug in where ours do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import lightning_xai
from lightning_xai import ProbeSet, checks
from lightning_xai import functional as F
from lightning_xai.callbacks import AttributionMonitor, FeatureDriftMonitor, SanityGate
from lightning_xai.renderers import RenderContext

from .fixtures import LitClassifier, SmallCNN, image_data, read_events, trainer

captum_attr = pytest.importorskip("captum.attr")


def squared_gradient(model, inputs, target=None):  # type: ignore[no-untyped-def]
    """A user's own method: the squared input gradient of the explained output."""
    x = inputs.requires_grad_(True)
    out = model(x)
    out = out[:, 0] if target is None else out.gather(1, target.view(-1, 1))
    (g,) = torch.autograd.grad(out.sum(), x)
    return g * g


class MySaliency(captum_attr.Saliency):
    """A Captum subclass, as users write them (kept as the class, never looked up by name)."""


@pytest.fixture
def registered():  # type: ignore[no-untyped-def]
    method = lightning_xai.register_method("squared_gradient", squared_gradient)
    yield method
    F.unregister_method("squared_gradient")


def _probe(n: int = 8) -> ProbeSet:
    return ProbeSet.from_dataset(image_data(32), n=n)


# ------------------------------------------------------------------------------------------ the table
def test_get_method_accepts_every_form(registered) -> None:  # type: ignore[no-untyped-def]
    assert F.get_method("saliency").shared_pass and not F.get_method("occlusion").needs_gradients
    assert F.get_method("squared_gradient") is registered
    assert F.get_method(registered) is registered
    assert F.get_method(squared_gradient).name == "squared_gradient"
    assert F.get_method("DeepLift").name == "DeepLift"
    sub = F.get_method(MySaliency)
    assert sub.name == "MySaliency" and sub is F.get_method(MySaliency)  # one entry per class
    assert F.get_method(captum_attr.GradientShap).stochastic
    with pytest.raises(TypeError, match="not a Captum attribution class"):
        F.get_method(dict)
    with pytest.raises(ValueError, match=r"unknown attribution method 'salency'; known methods: saliency.*squared_gradient"):
        F.get_method("salency")


def test_register_method_refuses_builtins_and_silent_replacement(registered) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'saliency' is a built-in method and cannot be replaced"):
        lightning_xai.register_method("saliency", squared_gradient)
    with pytest.raises(ValueError, match="registered already; pass overwrite=True"):
        lightning_xai.register_method("squared_gradient", squared_gradient)
    again = lightning_xai.register_method("squared_gradient", squared_gradient, overwrite=True)
    assert F.get_method("squared_gradient") is again
    with pytest.raises(ValueError, match="without '/'"):
        lightning_xai.AttributionMethod("a/b", squared_gradient)


@pytest.mark.parametrize("build", [
    lambda opts: AttributionMonitor(_probe(), methods={"integrated_gradients": opts}),
    lambda opts: FeatureDriftMonitor(_probe(), method={"integrated_gradients": opts}),
    lambda opts: checks.ParameterRandomization({"integrated_gradients": opts}),
    lambda opts: F.attribute(nn.Linear(3, 2), torch.ones(1, 3), 0, "integrated_gradients", **opts),
], ids=["AttributionMonitor", "FeatureDriftMonitor", "ParameterRandomization", "F.attribute"])
def test_options_are_checked_against_the_signature_everywhere(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"unknown option\(s\) n_step for 'integrated_gradients'; it takes baseline, n_steps, method, chunk_size"):
        build({"n_step": 8})


def test_captum_options_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) n_sample for 'GradientShap'; it takes baselines, n_samples, stdevs"):
        AttributionMonitor(_probe(), methods={captum_attr.GradientShap: {"n_sample": 4}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) window for 'Occlusion'; it takes sliding_window_shapes"):
        checks.RandomLogit({"Occlusion": {"window": 2}})


# ------------------------------------------------------------------------------------------ in a Trainer
def test_a_user_method_and_a_captum_subclass_work_in_every_callback_and_check(tmp_path, registered) -> None:  # type: ignore[no-untyped-def]
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=8)
    monitor = AttributionMonitor(probe, methods=["squared_gradient", MySaliency, squared_gradient], log_images=False)
    assert list(monitor.methods) == ["squared_gradient", "MySaliency"]  # the callable is the registered one
    drift = FeatureDriftMonitor(probe, method=MySaliency, metrics=["spearman"])
    gate = SanityGate(probe, [
        checks.ParameterRandomization("squared_gradient", max_similarity=1.0, layers=1),
        checks.ParameterRandomization("DeepLift", max_similarity=1.0, layers=1),
        checks.Finite(methods=[MySaliency, squared_gradient]),
    ], verbose=False)
    # Captum's DeepLift undoes max pooling with max_unpool2d, which has no deterministic kernel
    tr = trainer(tmp_path, [monitor, drift, gate], max_epochs=2, deterministic=False)
    model = LitClassifier(SmallCNN())
    tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    assert gate.last_passed and [r.name for r in gate.last_results] == [
        "parameter_randomization/squared_gradient", "parameter_randomization/DeepLift", "finite"]
    net = model.eval()
    x, t = probe.inputs, net(probe.inputs).argmax(1)
    torch.testing.assert_close(monitor.last_attributions["squared_gradient"], squared_gradient(net, x.clone(), t))
    expected = captum_attr.Saliency(net).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(monitor.last_attributions["MySaliency"], expected)
    assert "xai/drift/MySaliency/spearman/prev" in tr.callback_metrics
    assert "xai/attr/squared_gradient/gini" in tr.callback_metrics


class NumpyNoiseClassifier(LitClassifier):
    """Training that draws from NumPy's global RNG (augmentation noise), as many data pipelines do."""

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        noise = torch.as_tensor(np.random.normal(0.0, 0.05, size=tuple(x.shape)), dtype=x.dtype)
        return super().training_step((x + noise, y), batch_idx)


def _weights_after(tmp_path, callbacks) -> dict:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    np.random.seed(0)
    ds = image_data(32)
    # Dropout draws from torch's global RNG every step, the augmentation from NumPy's
    model = NumpyNoiseClassifier(SmallCNN())
    tr = trainer(tmp_path, callbacks, max_epochs=2, logger=False)
    tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    return {k: v.clone() for k, v in model.state_dict().items()}


_MASK = torch.arange(4).repeat_interleave(16).view(1, 1, 8, 8)
SAMPLERS = {
    "KernelShap": {"n_samples": 8, "feature_mask": _MASK},
    "Lime": {"n_samples": 8, "feature_mask": _MASK},
    "ShapleyValueSampling": {"n_samples": 1, "feature_mask": _MASK},
    "GradientShap": {"baselines": torch.zeros(3, 1, 8, 8), "n_samples": 2},  # NumPy picks baselines and alphas
    "NoiseTunnel": {"attribution": "Saliency", "nt_samples": 2, "stdevs": 0.1},
    "kernel_shap": {"n_samples": 8, "grid": 2},
    "lime": {"n_samples": 8, "grid": 2},
    "shapley_sampling": {"n_samples": 2, "grid": 2},
    "gradient_shap": {"n_samples": 2, "noise": 0.1, "baselines": torch.rand(3, 1, 8, 8)},
}


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_samplers_leave_training_bit_identical(tmp_path, method) -> None:  # type: ignore[no-untyped-def]
    plain = _weights_after(tmp_path / "plain", [])
    monitor = AttributionMonitor(_probe(4), methods={method: SAMPLERS[method]}, log_images=False)
    watched = _weights_after(tmp_path / "watched", [monitor])
    assert monitor.last_attributions[method].shape == (4, 1, 8, 8)
    for k in plain:
        assert torch.equal(plain[k], watched[k]), k


# ------------------------------------------------------------------------------------------ Captum made safe
@pytest.mark.parametrize("spec,message", [
    ({"NoiseTunnel": {"nt_samples": 2}},
     r"method 'NoiseTunnel' needs the option\(s\) attribution: pass them as \{'NoiseTunnel': \{'attribution': \.\.\.\}\}"),
    ({"NoiseTunnel": {"attribution": "NoiseTunnel"}}, "NoiseTunnel's attribution option must name the Captum method it smooths"),
    ({"NoiseTunnel": {"attribution": "LimeBase"}}, "Captum's LimeBase cannot be built from a model alone"),
    ({"NeuronGradient": {"layer": "net.conv1"}}, r"method 'NeuronGradient' needs the option\(s\) neuron_selector"),
    ({"LimeBase": {}}, "Captum's LimeBase cannot be built from a model alone: its constructor needs interpretable_model"),
    ({"LayerAttribution": {}}, "LayerAttribution is one of Captum's base classes, not a method"),
    ({"Occlusion": {"window": 2}}, r"unknown option\(s\) window for 'Occlusion'; it takes sliding_window_shapes"),
])
@pytest.mark.parametrize("where", ["AttributionMonitor", "FeatureDriftMonitor", "ParameterRandomization", "Finite"])
def test_captum_setup_errors_at_construction(spec, message, where) -> None:  # type: ignore[no-untyped-def]
    build = {
        "AttributionMonitor": lambda: AttributionMonitor(_probe(), methods=spec),
        "FeatureDriftMonitor": lambda: FeatureDriftMonitor(_probe(), method=spec),
        "ParameterRandomization": lambda: checks.ParameterRandomization(spec),
        "Finite": lambda: checks.Finite(methods=spec),
    }[where]
    with pytest.raises(ValueError, match=message):
        build()


def test_captum_required_options_get_defaults_and_layer_maps_are_upsampled() -> None:
    torch.manual_seed(0)
    net = SmallCNN().eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    # GradientShap without baselines: zeros; with zeros and one sample it is input x gradient at a random point
    assert F.attribute(net, x, t, "GradientShap", n_samples=2).shape == x.shape
    ref = captum_attr.Occlusion(net).attribute(x, target=t, sliding_window_shapes=(1, 1, 1))  # 8 // 8 = 1
    torch.testing.assert_close(F.attribute(net, x, t, "Occlusion"), ref)
    cam = F.attribute(net, x, t, "LayerGradCam", layer="conv2", relu_attributions=True)
    torch.testing.assert_close(cam, F.grad_cam(net, x, t, layer="conv2"))  # drawn like Grad-CAM
    raw = F.attribute(net, x, t, "LayerGradCam", layer="conv2", upsample=False)
    assert raw.shape == (3, 1, 8, 8) and F.get_method("LayerGradCam").is_layer_resolution({"upsample": False})
    conductance = F.attribute(net, x, t, "LayerConductance", layer="conv1", n_steps=4)
    assert conductance.shape == x.shape  # 6 channels summed, then spread over the input's one
    torch.manual_seed(1)
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(net)).attribute(x, target=t, nt_samples=3, stdevs=0.2)
    torch.manual_seed(1)
    torch.testing.assert_close(F.attribute(net, x, t, "NoiseTunnel", attribution="Saliency", nt_samples=3, stdevs=0.2), ref)
    state = np.random.get_state()[1].copy()
    F.attribute(net, x, t, "GradientShap", n_samples=4)  # draws from NumPy: forked
    assert (np.random.get_state()[1] == state).all()


def test_captum_layer_and_smoothing_classes_in_every_callback_and_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=8)
    methods = {"LayerGradCam": {"layer": "net.conv2"}, "NoiseTunnel": {"attribution": "Saliency", "nt_samples": 2},
               "kernel_shap": {"n_samples": 16, "grid": 2}}
    monitor = AttributionMonitor(probe, methods=methods)
    raw = AttributionMonitor(probe, methods={"LayerGradCam": {"layer": "net.pool", "upsample": False}})
    drift = FeatureDriftMonitor(probe, method={"LayerGradCam": {"layer": "net.conv2"}}, metrics=["spearman"])
    gate = SanityGate(probe, [
        checks.ParameterRandomization({"NoiseTunnel": {"attribution": "Saliency", "nt_samples": 2}}, max_similarity=1.0, layers=1),
        checks.RandomLogit({"LayerGradCam": {"layer": "net.conv2"}}, max_similarity=1.0),
        checks.Finite(methods=[{m: o} for m, o in methods.items()]),
    ], verbose=False)
    tr = trainer(tmp_path, [monitor, raw, drift, gate], max_epochs=2)
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=16)] * 2)
    assert gate.last_passed
    assert raw.last_attributions["LayerGradCam"].shape == (8, 1, 4, 4)
    images = read_events(tr.logger.log_dir).Tags()["images"]
    assert {"xai/attr/LayerGradCam", "xai/attr/NoiseTunnel", "xai/attr/kernel_shap"} <= set(images)
    assert "xai/drift/LayerGradCam/spearman/prev" in tr.callback_metrics


# ------------------------------------------------------------------------------------------ renderers
class Stripes:
    """A user's renderer: one grey stripe per probe sample, as bright as its mean |attribution|."""

    def __init__(self) -> None:
        self.calls: list = []

    def accepts(self, probe: ProbeSet) -> bool:
        return True

    def render(self, attributions: torch.Tensor, ctx: RenderContext) -> np.ndarray:
        self.calls.append((ctx.method, ctx.epoch, ctx.step))
        level = attributions.abs().flatten(1).mean(1)
        vmax = ctx.scale(level)
        rows = (255 * (level / vmax).clamp(0, 1)).to(torch.uint8).numpy()
        return np.repeat(np.repeat(rows[:, None, None], 4, axis=1), 3, axis=2).repeat(4, axis=0)


def test_a_user_renderer_replaces_ours_in_one_monitor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = image_data(32)
    stripes = Stripes()
    monitor = AttributionMonitor(ProbeSet.from_dataset(ds, n=4), methods=["saliency"], renderer=stripes)
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(LitClassifier(SmallCNN()), *[DataLoader(ds, batch_size=16)] * 2)
    assert [c[:2] for c in stripes.calls] == [("saliency", 0), ("saliency", 1)]
    images = read_events(tr.logger.log_dir).Images("xai/attr/saliency")
    assert [(im.height, im.width) for im in images] == [(16, 4), (16, 4)]
    with pytest.raises(TypeError, match=r"renderer needs accepts\(probe\)"):
        AttributionMonitor(ProbeSet.from_dataset(ds, n=4), renderer=object())  # type: ignore[arg-type]
