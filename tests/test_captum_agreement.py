"""Every attribution method equals Captum's on the same model and inputs (relative error <= 1e-5)."""

from __future__ import annotations

import pytest
import torch

captum_attr = pytest.importorskip("captum.attr")

from lightning_xai import functional as F  # noqa: E402

from .fixtures import MLP, SmallCNN, TwoBranchCNN, trained_batchnorm  # noqa: E402

TOL = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max().clamp_min(1e-12)
    return float((ours - ref).abs().max() / scale)


def _cnn():
    torch.manual_seed(0)
    return trained_batchnorm(SmallCNN(classes=4)).eval(), torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 1, 0])


def _mlp():
    torch.manual_seed(1)
    return MLP(features=6, classes=3).eval(), torch.randn(7, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0])


def _two():
    torch.manual_seed(2)
    return TwoBranchCNN(classes=5).eval(), torch.randn(4, 3, 8, 8), torch.tensor([4, 3, 2, 1])


MODELS = {"cnn": _cnn, "mlp": _mlp, "two_branch": _two}


@pytest.mark.parametrize("name", list(MODELS))
def test_saliency_and_input_x_gradient(name):
    model, x, t = MODELS[name]()
    assert rel_err(F.saliency(model, x, t), captum_attr.Saliency(model).attribute(x, target=t)) <= TOL
    ref = captum_attr.InputXGradient(model).attribute(x, target=t)
    assert rel_err(F.input_x_gradient(model, x, t), ref) <= TOL


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients(name, rule):
    model, x, t = MODELS[name]()
    baseline = torch.full_like(x[:1], 0.1)
    ours, delta = F.integrated_gradients(
        model, x, t, baseline=baseline, n_steps=20, method=rule, chunk_size=13, return_convergence_delta=True
    )
    ref, ref_delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline.expand_as(x), target=t, n_steps=20, method=rule, return_convergence_delta=True
    )
    assert rel_err(ours, ref) <= TOL
    assert torch.allclose(delta.double(), ref_delta.double(), atol=1e-4 * float(ref.abs().sum() / len(x)))


@pytest.mark.parametrize("name", list(MODELS))
def test_smoothgrad_same_noise_as_noise_tunnel(name):
    model, x, t = MODELS[name]()
    torch.manual_seed(123)  # Captum draws from the global RNG; ours from a generator with the same seed
    ref = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=5, stdevs=0.2, target=t
    )
    ours = F.smoothgrad(model, x, t, n_samples=5, noise=0.2, seed=123, chunk_size=4)
    assert rel_err(ours, ref) <= TOL


@pytest.mark.parametrize("name,layer", [("cnn", "conv2"), ("cnn", "conv1"), ("two_branch", "block1.0"), ("two_branch", "block2.0")])
def test_grad_cam_layer_resolution(name, layer):
    model, x, t = MODELS[name]()
    module = dict(model.named_modules())[layer]
    ref = captum_attr.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
    assert rel_err(F.grad_cam(model, x, t, layer=layer, upsample=False), ref) <= TOL
    up = F.grad_cam(model, x, t, layer=layer)
    assert up.shape == x.shape


def test_grad_cam_default_layer_is_last_conv():
    model, x, t = _two()
    ref = captum_attr.LayerGradCam(model, model.block2[0]).attribute(x, target=t, relu_attributions=True)
    assert rel_err(F.grad_cam(model, x, t, upsample=False), ref) <= TOL


@pytest.mark.parametrize(
    "name,window,stride",
    [("cnn", (1, 3, 3), (1, 2, 2)), ("cnn", (1, 2, 2), (1, 2, 2)), ("mlp", (2,), (1,)), ("two_branch", (3, 4, 4), (3, 3, 3))],
)
def test_occlusion(name, window, stride):
    model, x, t = MODELS[name]()
    ref = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=window, strides=stride, target=t, baselines=0.0)
    ours = F.occlusion(model, x, t, window=window, stride=stride, baseline=0.0, chunk_size=5)
    assert rel_err(ours, ref) <= TOL


def test_shared_pass_equals_separate_methods_and_costs_one_pass():
    model, x, t = _cnn()
    with F.count_passes() as c:
        maps = F.attribute_many(model, x, t, ["saliency", "input_x_gradient", "grad_cam"])
    assert (c.forward_calls, c.backward_calls) == (1, 1)
    assert torch.equal(maps["saliency"], F.saliency(model, x, t))
    assert torch.equal(maps["input_x_gradient"], F.input_x_gradient(model, x, t))
    assert torch.equal(maps["grad_cam"], F.grad_cam(model, x, t))


def test_chunking_does_not_change_numbers():
    model, x, t = _mlp()
    whole = F.integrated_gradients(model, x, t, n_steps=8)
    with F.count_passes() as c:
        chunked = F.integrated_gradients(model, x, t, n_steps=8, chunk_size=3)
    assert c.backward_rows == 8 * len(x)
    assert c.backward_calls == -(-8 * len(x) // 3)  # ceil: rows are split in chunks of 3
    assert torch.allclose(whole, chunked, atol=1e-6)
