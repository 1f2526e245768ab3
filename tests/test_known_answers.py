"""Exact answers on a linear model: saliency = |w_t|, input x gradient = IG (zero baseline) = w_t * x."""

from __future__ import annotations

import pytest
import torch

from lightning_xai import functional as F


@pytest.fixture
def linear():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    t = torch.tensor([2, 0, 1, 2])
    return net, x, t


def test_saliency_is_abs_weight(linear):
    net, x, t = linear
    assert torch.allclose(F.saliency(net, x, t), net.weight[t].abs().detach())


def test_input_x_gradient_equals_ig_equals_w_times_x(linear):
    net, x, t = linear
    expected = (net.weight[t] * x).detach()
    assert torch.allclose(F.input_x_gradient(net, x, t), expected, atol=1e-6)
    for rule in ("gausslegendre", "riemann_middle", "riemann_left", "riemann_right"):
        ig, delta = F.integrated_gradients(net, x, t, n_steps=4, method=rule, return_convergence_delta=True)
        assert torch.allclose(ig, expected, atol=1e-5), rule
        assert delta.abs().max() < 1e-5  # completeness is exact for a linear model


def test_smoothgrad_of_linear_model_is_abs_weight(linear):
    net, x, t = linear
    assert torch.allclose(F.smoothgrad(net, x, t, n_samples=3, noise=1.0), net.weight[t].abs().detach())


def test_occlusion_of_linear_model_is_w_times_x_minus_baseline(linear):
    net, x, t = linear
    got = F.occlusion(net, x, t, window=(1,), baseline=0.5)
    assert torch.allclose(got, (net.weight[t] * (x - 0.5)).detach(), atol=1e-6)


def test_grad_cam_of_a_linear_readout_of_one_conv():
    # y = sum_hw v * conv(x): the gradient wrt the activation is v everywhere, so the cam is
    # relu(v_k-weighted sum of channels) = relu(sum_k v_k * A_k).
    conv = torch.nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[[[1.0]]], [[[-2.0]]]])
    v = torch.tensor([3.0, 1.0])

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            a = self.conv(x)
            return (a * v.view(1, 2, 1, 1)).sum((2, 3)).sum(1, keepdim=True)

    x = torch.randn(2, 1, 3, 3)
    cam = F.grad_cam(Net(), x, layer="conv", upsample=False)
    expected = torch.relu(3.0 * x - 2.0 * x)
    assert torch.allclose(cam, expected, atol=1e-6)


def test_summaries_known_values():
    one_hot = torch.zeros(1, 10)
    one_hot[0, 3] = 5.0
    uniform = torch.ones(1, 10)
    assert F.gini(one_hot).item() == pytest.approx(0.9)
    assert F.gini(uniform).item() == pytest.approx(0.0)
    assert F.entropy(one_hot).item() == pytest.approx(0.0)
    assert F.entropy(uniform).item() == pytest.approx(1.0)
    assert F.top_mass(one_hot).item() == pytest.approx(1.0)
    assert F.top_mass(uniform).item() == pytest.approx(0.1)
    zero = torch.zeros(2, 10)  # degenerate map: defined values, no NaN
    assert F.summarize(zero) == pytest.approx({"gini": 0.0, "entropy": 1.0, "top10_mass": 0.1})
    # NaN in a map gives NaN in every summary (a check must see it), other rows keep their values
    with_nan = torch.tensor([[float("nan"), 1.0, 2.0], [1.0, 1.0, 1.0]])
    for fn in (F.gini, F.entropy, F.top_mass):
        out = fn(with_nan)
        assert torch.isnan(out[0]) and not torch.isnan(out[1]), fn.__name__
    assert all(v != v for v in F.summarize(with_nan[:1]).values())
