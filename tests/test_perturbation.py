"""SHAP and LIME at training time: exact where exactness is possible, equal to Captum when fed the
same random numbers, batched in chunks, seeded privately.

How the Captum comparisons are made honest: our methods take their coalitions (``coalitions=``) and
Captum's take them from a perturbation generator we hand them (``KernelShap`` subclassed to yield
ours, ``Lime`` given ``perturb_func``); Captum then evaluates the model and fits its own surrogate
(scikit-learn's). ``ShapleyValueSampling`` draws permutations with ``torch.randperm`` from the global
RNG, ours from a generator with the same seed: the same permutations. ``GradientShap`` draws its
noise from torch's global RNG (seeded like our generator: the same normals) and its references and
path points from NumPy, which the test hands our draws through a patch of ``numpy.random``; what
is compared is then the arithmetic on identical random numbers.
"""

from __future__ import annotations

import itertools
import math
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai import functional as F
from lightning_xai.functional import perturbation as P

from .testers import captum_fed_kernel_shap, captum_fed_lime

TOL = 1e-5


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.detach().double(), ref.detach().double()
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _mlp(features: int = 5, seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return net, torch.randn(4, features), torch.tensor([0, 1, 2, 1])


def brute_force_shapley(net: nn.Module, x: torch.Tensor, t: torch.Tensor, baseline: float = 0.0) -> torch.Tensor:
    """Shapley values by their definition: every coalition S without i, weighted |S|! (F-|S|-1)! / F!."""
    n, features = x.shape
    phi = torch.zeros(n, features, dtype=torch.float64)

    def v(subset):  # type: ignore[no-untyped-def]
        z = torch.full_like(x, baseline)
        z[:, list(subset)] = x[:, list(subset)]
        with torch.no_grad():
            return net(z).gather(1, t.view(-1, 1)).squeeze(1).double()

    for i in range(features):
        others = [j for j in range(features) if j != i]
        for k in range(features):
            w = math.factorial(k) * math.factorial(features - k - 1) / math.factorial(features)
            for subset in itertools.combinations(others, k):
                phi[:, i] += w * (v(subset + (i,)) - v(subset))
    return phi


# ------------------------------------------------------------------------------------------ features
def test_feature_mask_per_kind_and_given() -> None:
    img = torch.zeros(2, 3, 8, 8)
    m = F.feature_mask(img)
    assert m.shape == (1, 3, 8, 8) and F.count_features(m) == 16
    assert torch.equal(m[0, 0, :2, :2], torch.zeros(2, 2, dtype=torch.long)) and int(m[0, 2, 7, 7]) == 15
    assert torch.equal(m[0, 0], m[0, 2])  # a superpixel spans every channel
    assert F.count_features(F.feature_mask(img, grid=(2, 3))) == 6
    assert F.count_features(F.feature_mask(torch.zeros(2, 1, 3, 3), grid=8)) == 9  # clipped to the image
    assert torch.equal(F.feature_mask(torch.zeros(4, 3)), torch.tensor([[0, 1, 2]]))
    assert F.feature_mask(torch.zeros(2, 2, 5)).shape == (1, 2, 5)  # one feature per element
    own = torch.tensor([[0, 0, 1, 1]])
    assert F.feature_mask(torch.zeros(3, 4), mask=own).shape == (1, 4)
    per_row = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1]])
    assert torch.equal(F.feature_mask(torch.zeros(3, 4), mask=per_row), per_row)
    assert F.feature_mask(img, mask=torch.zeros(1, 8, 8, dtype=torch.long)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="grid= groups the pixels of images"):
        F.feature_mask(torch.zeros(2, 4), grid=2)
    with pytest.raises(ValueError, match="does not fit inputs of shape"):
        F.feature_mask(torch.zeros(2, 4), mask=torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer feature ids"):
        F.feature_mask(torch.zeros(2, 4), mask=torch.zeros(4))
    with pytest.raises(ValueError, match="either grid= .* or feature_mask="):
        F.feature_mask(img, grid=2, mask=torch.zeros(8, 8, dtype=torch.long))


def test_superpixels_carry_their_feature_value() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    a = F.kernel_shap(net, x, 1, grid=2, n_samples=16)  # 16 >= 2**4: exact
    cells = a.unfold(2, 4, 4).unfold(3, 4, 4)  # (N, C, 2, 2, 4, 4)
    assert torch.equal(cells, cells[..., :1, :1].expand_as(cells))  # constant on each superpixel
    assert torch.equal(a[:, 0], a[:, 2])
    with torch.no_grad():
        gain = net(x)[:, 1] - net(torch.zeros_like(x))[:, 1]
    per_feature = a[:, 0, ::4, ::4].reshape(2, -1)
    torch.testing.assert_close(per_feature.sum(1), gain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("features", [4, 5, 6])
def test_kernel_shap_enumerates_every_coalition_and_is_exact(features: int) -> None:
    net, x, t = _mlp(features, seed=features)
    ref = brute_force_shapley(net, x, t)
    with F.count_passes() as c:
        ours = F.kernel_shap(net, x, t, n_samples=2**features, chunk_size=7)
    assert c.forward_rows == 2**features * len(x)  # explicit targets: no extra forward
    assert float((ours.double() - ref).abs().max()) <= 1e-5
    # a baseline other than 0, and the "predicted" target
    ref = brute_force_shapley(net, x, net(x).argmax(1), baseline=0.5)
    ours = F.kernel_shap(net, x, "predicted", n_samples=10**4, baseline=0.5)
    assert float((ours.double() - ref).abs().max()) <= 1e-5


def test_shapley_sampling_is_efficient_and_converges() -> None:
    net, x, t = _mlp(6, seed=1)
    ref = brute_force_shapley(net, x, t)
    with torch.no_grad():
        gain = (net(x) - net(torch.zeros_like(x))).gather(1, t.view(-1, 1)).squeeze(1).double()
    errors = []
    for n in (4, 64, 1024):
        phi = F.shapley_sampling(net, x, t, n_samples=n)
        assert float((phi.double().sum(1) - gain).abs().max()) <= 1e-5  # efficiency, every n
        errors.append(float((phi.double() - ref).abs().mean()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.1 * errors[0]


def test_kernel_shap_sampled_is_efficient_and_converges() -> None:
    net, x, t = _mlp(8, seed=2)
    ref = brute_force_shapley(net, x, t)
    errors = [float((F.kernel_shap(net, x, t, n_samples=n).double() - ref).abs().mean()) for n in (16, 64, 250)]
    assert errors[0] > errors[2] and errors[2] < 0.2 * errors[0], errors
    phi = F.kernel_shap(net, x, t, n_samples=16).double()
    torch.testing.assert_close(phi.sum(1), ref.sum(1), atol=1e-5, rtol=0)


def test_linear_model_known_answers() -> None:
    net = nn.Linear(4, 1)
    x, b = torch.randn(3, 4), torch.randn(4)
    expected = (net.weight * (x - b)).detach()
    for method, opts in [("kernel_shap", {"n_samples": 16}), ("shapley_sampling", {"n_samples": 3}),
                         ("feature_ablation", {}), ("kernel_shap", {"n_samples": 40}),
                         ("lime", {"n_samples": 64, "alpha": 0.0})]:
        out = F.attribute(net, x, None, method, baseline=b, **opts)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # expected gradients of a linear model from a single reference: w * (x - b) whatever the alphas
    out = F.gradient_shap(net, x, None, baselines=b, n_samples=3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ Captum
captum_attr = pytest.importorskip("captum.attr")


@pytest.mark.filterwarnings("ignore:You are providing multiple inputs")
@pytest.mark.parametrize("image", [False, True], ids=["tabular", "superpixels"])
def test_kernel_shap_equals_captum_given_the_same_coalitions(image: bool) -> None:
    if image:
        torch.manual_seed(3)
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
        x, t, features = torch.randn(3, 1, 8, 8), torch.tensor([0, 3, 1]), 16
        mask = F.feature_mask(x, grid=4)
    else:
        net, x, t = _mlp(6, seed=3)
        features, mask = 6, torch.arange(6).view(1, 6)
    z = P._kernel_samples(features, 60, torch.Generator().manual_seed(0))  # end points first, as Captum's
    ours = F.kernel_shap(net, x, t, coalitions=z, grid=4 if image else None)
    # Captum: the same 60 coalitions, the end points weighted 1e6 (its stand-in for our exact constraint)
    ref = captum_fed_kernel_shap(net, z).attribute(x, target=t, n_samples=len(z), feature_mask=mask)
    assert rel_err(ours, ref) <= TOL
    # and drawn by our own sampler from the seed: the same coalitions as passing them
    torch.testing.assert_close(F.kernel_shap(net, x, t, n_samples=60, grid=4 if image else None), ours)


@pytest.mark.filterwarnings("ignore:You are providing multiple inputs")
def test_lime_equals_captum_given_the_same_coalitions_kernel_and_surrogate() -> None:
    net, x, t = _mlp(6, seed=4)
    z = torch.rand(50, 6, generator=torch.Generator().manual_seed(0)) < 0.5  # what lime(seed=0) draws
    for alpha in (1.0, 0.1):
        explainer = captum_fed_lime(net, z, alpha=alpha, kernel_width=0.25)
        ref = explainer.attribute(x, target=t, n_samples=len(z), feature_mask=torch.arange(6).view(1, 6))
        assert rel_err(F.lime(net, x, t, coalitions=z, alpha=alpha), ref) <= TOL
    torch.testing.assert_close(F.lime(net, x, t, n_samples=50, alpha=0.1), F.lime(net, x, t, coalitions=z, alpha=0.1))


def test_shapley_sampling_equals_captum_with_the_same_permutations() -> None:
    net, x, t = _mlp(6, seed=5)
    torch.manual_seed(7)  # Captum: torch.randperm from the global RNG; ours: from a generator seeded 7
    ref = captum_attr.ShapleyValueSampling(net).attribute(x, target=t, n_samples=9)
    assert rel_err(F.shapley_sampling(net, x, t, n_samples=9, seed=7, chunk_size=5), ref) <= TOL
    mask = torch.tensor([[0, 0, 1, 2, 2, 1]])
    torch.manual_seed(7)
    ref = captum_attr.ShapleyValueSampling(net).attribute(x, target=t, n_samples=4, feature_mask=mask, baselines=0.3)
    assert rel_err(F.shapley_sampling(net, x, t, n_samples=4, seed=7, feature_mask=mask, baseline=0.3), ref) <= TOL


def test_feature_ablation_equals_captum() -> None:
    net, x, t = _mlp(6, seed=6)
    mask = torch.tensor([[0, 1, 1, 2, 3, 3]])
    ref = captum_attr.FeatureAblation(net).attribute(x, target=t, feature_mask=mask, baselines=-0.2)
    assert rel_err(F.feature_ablation(net, x, t, feature_mask=mask, baseline=-0.2, chunk_size=3), ref) <= TOL
    img = torch.randn(2, 3, 8, 8)
    cnn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4)).eval()
    ref = captum_attr.FeatureAblation(cnn).attribute(img, target=1, feature_mask=F.feature_mask(img, grid=(2, 4)))
    assert rel_err(F.feature_ablation(cnn, img, 1, grid=(2, 4)), ref) <= TOL


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_gradient_shap_equals_captum_on_the_same_draws(noise: float) -> None:
    net, x, t = _mlp(6, seed=7)
    refs = torch.randn(5, 6)
    samples, seed = 6, 11
    _, index, alpha = P._gradient_shap_draws(len(x) * samples, (6,), len(refs), noise, seed, None, x.dtype)
    ours = F.gradient_shap(net, x, t, baselines=refs, n_samples=samples, noise=noise, seed=seed, chunk_size=5)
    with mock.patch("numpy.random.choice", lambda n, size: index.numpy()), \
         mock.patch("numpy.random.uniform", lambda low, high, size: alpha.double().numpy()):
        torch.manual_seed(seed)  # the noise: Captum's global draw equals our generator's first draw
        ref = captum_attr.GradientShap(net).attribute(x, baselines=refs, target=t, n_samples=samples, stdevs=noise)
    assert rel_err(ours, ref) <= TOL


def test_gradient_shap_shards_equal_the_whole_probe() -> None:
    net, x, t = _mlp(6, seed=8)
    refs = torch.randn(3, 6)
    whole = F.gradient_shap(net, x, t, n_samples=4, noise=0.2, baselines=refs)
    parts = [F.gradient_shap(net, x[a:b], t[a:b], n_samples=4, noise=0.2, baselines=refs, shard=(a, 4))
             for a, b in [(0, 2), (2, 4)]]
    torch.testing.assert_close(torch.cat(parts), whole)


# ------------------------------------------------------------------------------------------ batching, seeding
@pytest.mark.parametrize("method", F.PERTURBATION_METHODS)
def test_chunking_same_numbers_global_rng_untouched_and_same_draws_every_call(method: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x = torch.randn(3, 3, 8, 8)
    opts = {"n_samples": 6} if method != "feature_ablation" else {}
    torch.manual_seed(123)
    state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    whole = getattr(F, method)(net, x, "predicted", **opts)
    assert torch.equal(torch.random.get_rng_state(), state) and (np.random.get_state()[1] == np_state).all()
    chunked = getattr(F, method)(net, x, "predicted", chunk_size=4, **opts)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert torch.equal(getattr(F, method)(net, x, "predicted", **opts), whole)  # same seed, same draws
    assert whole.shape == x.shape and torch.isfinite(whole).all()


def test_forward_rows_are_what_the_docs_say() -> None:
    net, x, t = _mlp(6, seed=9)
    expected = {"kernel_shap": 30 * 4, "lime": 30 * 4, "shapley_sampling": (3 * 5 + 2) * 4, "feature_ablation": 7 * 4}
    for method, rows in expected.items():
        opts = {"n_samples": 30 if method != "shapley_sampling" else 3} if method != "feature_ablation" else {}
        with F.count_passes() as c:
            F.attribute(net, x, t, method, chunk_size=16, **opts)
        assert (c.forward_rows, c.backward_rows) == (rows, 0), method
        assert c.forward_calls == -(-rows // 16), method


def test_method_table_flags_and_bad_options() -> None:
    for name in ("kernel_shap", "lime", "shapley_sampling", "feature_ablation"):
        assert not F.get_method(name).needs_gradients
    assert F.get_method("gradient_shap").needs_gradients
    assert [F.get_method(m).stochastic for m in F.PERTURBATION_METHODS] == [True, True, True, True, False]
    with pytest.raises(ValueError, match=r"unknown option\(s\) n_sample for 'kernel_shap'; it takes n_samples, grid"):
        F.resolve_methods({"kernel_shap": {"n_sample": 8}})
    with pytest.raises(ValueError, match="n_samples must be an int >= 2"):
        F.kernel_shap(nn.Linear(3, 1), torch.ones(1, 3), n_samples=1)
    with pytest.raises(ValueError, match=r"coalitions must be a \(samples, 3\) 0/1 tensor"):
        F.kernel_shap(nn.Linear(3, 1), torch.ones(1, 3), coalitions=torch.ones(4, 2))
    with pytest.raises(ValueError, match="baselines of shape"):
        F.gradient_shap(nn.Linear(3, 1), torch.ones(1, 3), baselines=torch.ones(2, 4))


# ------------------------------------------------------------------------------------------ drift
def test_drift_monitor_with_kernel_shap_ranks_superpixels_by_mean_abs_shap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from torch.utils.data import DataLoader

    from lightning_xai import ProbeSet
    from lightning_xai.callbacks import FeatureDriftMonitor

    from .fixtures import LitClassifier, SmallCNN, image_data, trainer

    ds = image_data(32)
    probe = ProbeSet.from_dataset(ds, n=6)
    drift = FeatureDriftMonitor(probe, method={"kernel_shap": {"n_samples": 64}}, metrics=["ndcg", "spearman"], grid=2)
    assert drift.method_options["grid"] == (2, 2)  # the method's superpixels are the monitor's cells
    tr = trainer(tmp_path, [drift], max_epochs=2)
    model = LitClassifier(SmallCNN())
    tr.fit(model, *[DataLoader(ds, batch_size=16)] * 2)
    assert "xai/drift/kernel_shap/ndcg/prev" in tr.callback_metrics
    assert "xai/drift/kernel_shap/ndcg/ref" in tr.callback_metrics
    # the global importance is mean |SHAP| per superpixel (2 x 2 = 4 features, exact with 64 >= 2**4)
    net = model.eval()
    target = net(probe.inputs).argmax(1)
    phi = F.kernel_shap(net, probe.inputs, target, grid=2, n_samples=16)[:, 0, ::4, ::4].reshape(6, 4)
    torch.testing.assert_close(drift.history[-1]["importance"], phi.abs().mean(0).double(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"kernel_shap's grid \(4, 4\) is not the monitor's grid \(2, 2\)"):
        FeatureDriftMonitor(probe, method={"kernel_shap": {"grid": 4}}, grid=2)


def test_drift_monitor_with_kernel_shap_on_tabular_probe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lightning_xai.callbacks import FeatureDriftMonitor

    from .fixtures import FEATURES, MLP, Classifier, loaders, tabular_data, tabular_probe, trainer

    train, val = tabular_data()
    probe = tabular_probe(val, n=8)
    drift = FeatureDriftMonitor(probe, method="kernel_shap", metrics=["ndcg"])
    tr = trainer(tmp_path, [drift], max_epochs=2)
    tr.fit(Classifier(MLP(features=len(FEATURES), classes=2)), *loaders(train, val))
    assert "xai/drift/kernel_shap/ndcg/prev" in tr.callback_metrics
    assert "xai/importance/kernel_shap/age" in tr.callback_metrics
