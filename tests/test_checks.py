"""lightning_xai.checks and lightning_xai.functional.checks: known answers, references, errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats
from torch import nn

from lightning_xai import ProbeSet, checks
from lightning_xai import functional as F

from .fixtures import digits_tensors, trained_digits_cnn


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return trained_digits_cnn()


@pytest.fixture(scope="module")
def digits_probe() -> ProbeSet:
    x, y = digits_tensors()
    return ProbeSet(x[-32:], y[-32:], masks=(x[-32:] > 0.25))


def the_input(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """A "method" that ignores the model and the target: the input itself (an edge detector's cousin)."""
    return x.detach().clone()


def fixed_maps(maps: torch.Tensor):  # type: ignore[no-untyped-def]
    def method(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return maps

    return method


def smooth_mlp(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 16), nn.Softplus(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    return net


# ------------------------------------------------------------------------------------------------ similarity
def test_spearman_matches_scipy_with_ties_and_constants() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 30), generator=g).float()  # many ties
    b = a + torch.randn(6, 30, generator=g)
    ours = F.spearman(a, b)
    for i in range(6):
        assert ours[i].item() == pytest.approx(stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)
    const = F.spearman(torch.ones(1, 5), torch.arange(5.0).view(1, 5))
    assert torch.isnan(const).all()  # as scipy: no ranking in a constant row
    nan = F.spearman(torch.tensor([[1.0, float("nan"), 3.0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.isnan(nan).all()


def test_map_similarity_degenerate_maps_are_defined() -> None:
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros_like(x)
    assert F.map_similarity(x, zeros).tolist() == [0.0, 0.0]  # ranking destroyed
    assert F.map_similarity(zeros, zeros).tolist() == [1.0, 1.0]  # nothing changed
    assert F.map_similarity(x, -3 * x).tolist() == pytest.approx([1.0, 1.0])  # |maps|, scale-free
    assert F.map_similarity(x, -3 * x, "ssim").tolist() == pytest.approx([1.0, 1.0])
    assert torch.isfinite(F.map_similarity(x, zeros, "ssim")).all()
    x[0, 0, 0, 0] = float("nan")
    assert math.isnan(F.map_similarity(x, zeros)[0].item())
    with pytest.raises(ValueError, match="ssim compares 2-D maps"):
        F.map_similarity(torch.rand(2, 5), torch.rand(2, 5), "ssim")


# ------------------------------------------------------------------------------------------------ localisation maths
def test_relevance_mass_hand_made_maps() -> None:
    attr = torch.zeros(3, 1, 2, 2)
    attr[0, 0] = torch.tensor([[3.0, -1.0], [0.0, 0.0]])  # 3 of 4 inside
    attr[1, 0] = torch.tensor([[0.0, 2.0], [2.0, 0.0]])  # none inside
    # sample 2: all zero -> no mass anywhere -> 0 inside
    mask = torch.zeros(3, 1, 2, 2)
    mask[:, 0, 0, 0] = 1
    assert F.relevance_mass(attr, mask).tolist() == [0.75, 0.0, 0.0]
    # a one-channel mask counts every channel of a 3-channel map
    rgb = torch.ones(1, 3, 2, 2)
    assert F.relevance_mass(rgb, mask[:1]).tolist() == [0.25]
    attr[0, 0, 1, 1] = float("nan")
    assert math.isnan(F.relevance_mass(attr, mask)[0].item())
    with pytest.raises(ValueError, match="does not broadcast"):
        F.relevance_mass(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 3, 3))


def test_region_mass_and_pointing_game() -> None:
    attr = torch.ones(2, 1, 4, 4)
    attr[1, 0, 3, 3] = 13.0  # 13 of 28 in the bottom-right pixel
    region = torch.zeros(4, 4)
    region[3, 3] = 1
    assert F.region_mass(attr, region).tolist() == pytest.approx([1 / 16, 13 / 28])
    assert F.pointing_game(attr, region.expand(2, 1, 4, 4)).tolist() == [0.0, 1.0]  # constant map misses
    with pytest.raises(ValueError, match="does not broadcast to one sample"):
        F.region_mass(attr, torch.ones(3, 3))


def test_completeness_error_known_answers() -> None:
    attr = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    # d = [4, 1]; errors |3 - 4| + |1 - 1| = 1 over |4| + |1| = 5
    assert F.completeness_error(attr, torch.tensor([4.0, 1.0]), torch.zeros(2)).item() == pytest.approx(0.2)
    assert F.completeness_error(torch.zeros(1, 2), torch.zeros(1), torch.zeros(1)).item() == 0.0
    assert math.isinf(F.completeness_error(torch.ones(1, 2), torch.zeros(1), torch.zeros(1)).item())


# ------------------------------------------------------------------------------------------------ checks: MPRT, random logit
def test_parameter_randomization_fails_for_the_input_itself_and_passes_for_saliency(cnn, digits_probe) -> None:  # type: ignore[no-untyped-def]
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    rng = torch.random.get_rng_state()
    bad, good, good_ssim = checks.run(
        [
            checks.ParameterRandomization(the_input, max_similarity=0.5),
            checks.ParameterRandomization("saliency", max_similarity=0.5),
            checks.ParameterRandomization("saliency", max_similarity=0.5, similarity="ssim", mode="independent", name="mprt_ssim"),
        ],
        cnn, digits_probe,
    )
    assert not bad.passed and bad.value == pytest.approx(1.0)
    assert "> max 0.5" in bad.reason and bad.name == "parameter_randomization/the_input"
    assert good.passed and good.value < 0.35, good.reason
    assert good_ssim.passed and good_ssim.value < 0.35, good_ssim.reason
    assert set(good.details) == {"step/6", "step/2", "step/0"}  # top layer first, cascading down
    assert good.value == max(good.details.values())
    # the real model and the global RNG are untouched
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(p.grad is None for p in cnn.parameters())


def test_parameter_randomization_is_reproducible_and_layers_select_steps(cnn, digits_probe) -> None:  # type: ignore[no-untyped-def]
    one = checks.ParameterRandomization("saliency", 0.5, layers=1, seed=3)
    named = checks.ParameterRandomization("saliency", 0.5, layers=["6", "0"], mode="independent", name="named")
    r1, r2 = checks.run([one, named], cnn, digits_probe)
    assert list(r1.details) == ["step/6"] and list(r2.details) == ["step/6", "step/0"]
    assert checks.run([one], cnn, digits_probe)[0].value == r1.value  # same seed, same copy
    with pytest.raises(ValueError, match="layer\\(s\\) 'nope' not found.*from the top: 6, 2, 0"):
        checks.run([checks.ParameterRandomization("saliency", 0.5, layers=["nope"])], cnn, digits_probe)


def test_random_logit_fails_for_a_target_blind_method_and_passes_for_saliency(cnn, digits_probe) -> None:  # type: ignore[no-untyped-def]
    bad, good = checks.run(
        [checks.RandomLogit(the_input, max_similarity=0.5), checks.RandomLogit("saliency", max_similarity=0.5)],
        cnn, digits_probe,
    )
    assert not bad.passed and bad.value == pytest.approx(1.0)
    assert good.passed and good.value < 0.4, good.reason
    single = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with pytest.raises(ValueError, match="several class outputs"):
        checks.run([checks.RandomLogit("saliency")], single, digits_probe)


# ------------------------------------------------------------------------------------------------ checks: localisation
def _mask_probe() -> ProbeSet:
    masks = torch.zeros(2, 1, 4, 4)
    masks[:, :, :2, :2] = 1  # top-left quarter
    return ProbeSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), masks=masks)


def test_relevance_mass_and_pointing_game_checks_on_hand_made_maps() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    inside = torch.zeros(2, 1, 4, 4)
    inside[:, :, 0, 0] = 3.0
    inside[:, :, 3, 3] = 1.0  # 75% inside, peak inside
    outside = torch.zeros(2, 1, 4, 4)
    outside[:, :, 0, 0] = 1.0
    outside[:, :, 3, 3] = 3.0  # 25% inside, peak outside
    probe = _mask_probe()
    r = checks.run(
        [
            checks.RelevanceMass(fixed_maps(inside), min_mass=0.7, name="rm_in"),
            checks.RelevanceMass(fixed_maps(outside), min_mass=0.7, name="rm_out"),
            checks.PointingGame(fixed_maps(inside), min_hit_rate=1.0, name="pg_in"),
            checks.PointingGame(fixed_maps(outside), min_hit_rate=0.5, name="pg_out"),
        ],
        net, probe,
    )
    assert [(x.value, x.passed) for x in r] == [(0.75, True), (0.25, False), (1.0, True), (0.0, False)]
    assert r[1].reason == "rm_out = 0.25 < min 0.7 (share of |method| inside the probe masks)"


def test_relevance_mass_without_masks_is_a_setup_error_naming_the_fix() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    probe = ProbeSet(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    for check in (checks.RelevanceMass("saliency"), checks.PointingGame("saliency")):
        with pytest.raises(ValueError, match="needs ground-truth masks.*masks=\\.\\.\\."):
            checks.run([check], net, probe)


def test_spurious_region_check() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    probe = _mask_probe()
    corner = torch.zeros(4, 4)
    corner[3, 3] = 1
    maps = torch.ones(2, 1, 4, 4)
    maps[:, :, 3, 3] = 5.0  # 5 / 20
    ok, bad = checks.run(
        [
            checks.SpuriousRegion(corner, fixed_maps(maps), max_mass=0.3, name="ok"),
            checks.SpuriousRegion(corner, fixed_maps(maps), max_mass=0.2, name="bad"),
        ],
        net, probe,
    )
    assert ok.passed and not bad.passed and ok.value == pytest.approx(0.25)
    with pytest.raises(ValueError, match="does not broadcast to one probe sample"):
        checks.run([checks.SpuriousRegion(torch.ones(3, 3), "saliency")], net, probe)
    with pytest.raises(ValueError, match="0/1"):
        checks.SpuriousRegion(torch.full((4, 4), 2.0), "saliency")
    with pytest.raises(ValueError, match="at least one non-zero"):
        checks.SpuriousRegion(torch.zeros(4, 4), "saliency")


# ------------------------------------------------------------------------------------------------ checks: completeness
def test_completeness_fails_with_2_steps_and_passes_with_256_on_a_smooth_model() -> None:
    net = smooth_mlp()
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(2)) * 2
    probe = ProbeSet(x)
    coarse, fine = checks.run(
        [checks.Completeness(max_error=0.01, n_steps=2, name="c2"), checks.Completeness(max_error=0.01, n_steps=256, name="c256")],
        net, probe,
    )
    assert not coarse.passed and coarse.value > 0.05, coarse.reason
    assert fine.passed and fine.value < 1e-3, fine.reason
    # the same number as integrated gradients' own convergence delta
    target = net(x).argmax(1)
    assert fine.value == pytest.approx(F.ig_completeness(net, x, target, n_steps=256).item(), abs=1e-6)  # float32 round-off
    assert coarse.value == pytest.approx(F.ig_completeness(net, x, target, n_steps=2).item(), rel=1e-6)
    riemann = checks.run([checks.Completeness(max_error=0.01, n_steps=8, rule="riemann_trapezoid")], net, probe)[0]
    assert riemann.value == pytest.approx(
        F.ig_completeness(net, x, target, n_steps=8, method="riemann_trapezoid").item(), rel=1e-6
    )


# ------------------------------------------------------------------------------------------------ checks: monitor values
def test_dead_units_and_drift_read_the_monitor_keys() -> None:
    net = nn.Linear(3, 2)
    probe = ProbeSet(torch.randn(4, 3))
    metrics = {
        "xai/dead_relu/all": torch.tensor(0.3),
        "xai/drift/saliency/spearman/ref": torch.tensor(0.9),
        "xai/drift/saliency/js_divergence/prev": torch.tensor(0.2),
    }
    r = checks.run(
        [
            checks.DeadUnits(max_fraction=0.5),
            checks.DeadUnits(max_fraction=0.2, name="dead_strict"),
            checks.Drift("spearman", min_value=0.8),
            checks.Drift("spearman", min_value=0.95, name="drift_strict"),
            checks.Drift("js_divergence", max_value=0.1, against="prev"),
            checks.Drift("kendall", min_value=0.5),
            checks.Drift("kendall", min_value=0.5, missing="skip", name="drift_skip"),
        ],
        net, probe, metrics=metrics,
    )
    assert [x.passed for x in r] == [True, False, True, False, False, False, True]
    assert r[0].value == pytest.approx(0.3) and r[2].value == pytest.approx(0.9)
    missing, skipped = r[5], r[6]
    assert math.isnan(missing.value) and "not in trainer.callback_metrics" in missing.reason
    assert "add FeatureDriftMonitor before SanityGate" in missing.reason
    assert skipped.skipped and skipped.reason.startswith("skipped:")


def test_drift_and_dead_units_arguments() -> None:
    with pytest.raises(ValueError, match="unknown drift metric 'pearson'.*spearman, kendall"):
        checks.Drift("pearson", min_value=0.5)
    with pytest.raises(ValueError, match="divergence.*max_value"):
        checks.Drift("js_divergence", min_value=0.5)
    with pytest.raises(ValueError, match="needs a bound"):
        checks.Drift("spearman")
    with pytest.raises(ValueError, match="against must be 'ref' or 'prev'"):
        checks.Drift("spearman", 0.5, against="first")
    with pytest.raises(ValueError, match="max_fraction must be between 0.0 and 1.0"):
        checks.DeadUnits(1.5)
    with pytest.raises(ValueError, match="missing must be 'fail' or 'skip'"):
        checks.DeadUnits(0.5, missing="ignore")


# ------------------------------------------------------------------------------------------------ checks: finite, custom, NaN
class NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1)[:, :2] * 1.0
        return out / torch.zeros_like(out) * 0  # NaN outputs


def test_finite_fails_on_nan_outputs_and_maps() -> None:
    probe = ProbeSet(torch.rand(3, 4))
    ok = checks.run([checks.Finite()], nn.Linear(4, 2), probe)[0]
    assert ok.passed and ok.value == 0.0
    bad = checks.run([checks.Finite()], NaNModel(), probe, target=0)[0]
    assert not bad.passed and bad.value > 0 and "NaN or infinite" in bad.reason
    maps = torch.ones(3, 4)
    maps[0, 0] = float("inf")
    inf = checks.run([checks.Finite(methods=[fixed_maps(maps)])], nn.Linear(4, 2), probe)[0]
    assert not inf.passed and inf.value == pytest.approx(1 / (6 + 12))


def test_nan_never_passes() -> None:
    probe = ProbeSet(torch.rand(3, 1, 4, 4), masks=torch.ones(3, 4, 4))
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    nan_maps = torch.full((3, 1, 4, 4), float("nan"))
    results = checks.run(
        [
            checks.RelevanceMass(fixed_maps(nan_maps), min_mass=0.0),
            checks.SpuriousRegion(torch.ones(4, 4), fixed_maps(nan_maps), max_mass=1.0),
            checks.ParameterRandomization(fixed_maps(nan_maps), max_similarity=1.0),
            checks.Custom(lambda ctx: float("nan"), "nan_custom", max_value=1.0),
        ],
        net, probe,
    )
    for r in results:
        assert not r.passed and math.isnan(r.value) and "NaN" in r.reason, r


def test_custom_check_forms_and_errors() -> None:
    probe = ProbeSet(torch.rand(3, 4))
    net = nn.Linear(4, 2)
    r = checks.run(
        [
            checks.Custom(lambda ctx: True, "yes"),
            checks.Custom(lambda ctx: False, "no"),
            checks.Custom(lambda ctx: ctx.outputs.shape[0], "n", min_value=3, max_value=3),
            checks.Custom(lambda ctx: checks.CheckResult("x", 2.0, False, "my reason"), "own"),
        ],
        net, probe,
    )
    assert [(x.name, x.value, x.passed) for x in r] == [("yes", 1.0, True), ("no", 0.0, False), ("n", 3.0, True), ("own", 2.0, False)]
    with pytest.raises(TypeError, match="no min_value/max_value"):
        checks.run([checks.Custom(lambda ctx: 0.5, "unbounded")], net, probe)
    with pytest.raises(TypeError, match="callable"):
        checks.Custom(0.5, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a name"):
        checks.Custom(lambda ctx: True, "")


def test_argument_errors_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown attribution method 'salency'"):
        checks.RelevanceMass("salency")
    with pytest.raises(ValueError, match="unknown option\\(s\\) steps for 'integrated_gradients'"):
        checks.RelevanceMass({"integrated_gradients": {"steps": 3}})
    with pytest.raises(ValueError, match="max_similarity must be between -1.0 and 1.0"):
        checks.ParameterRandomization("saliency", max_similarity=2)
    with pytest.raises(ValueError, match="mode must be 'cascading' or 'independent'"):
        checks.ParameterRandomization("saliency", mode="all")
    with pytest.raises(ValueError, match="similarity must be one of spearman, ssim"):
        checks.RandomLogit("saliency", similarity="pearson")
    with pytest.raises(ValueError, match="layers must be None, an int >= 1"):
        checks.ParameterRandomization("saliency", layers=0)
    with pytest.raises(ValueError, match="min_mass must be between 0.0 and 1.0"):
        checks.RelevanceMass("saliency", min_mass=-0.1)
    with pytest.raises(ValueError, match="n_steps must be an int >= 2"):
        checks.Completeness(n_steps=1)
    with pytest.raises(ValueError, match="two checks are named 'finite'"):
        checks.validate([checks.Finite(), checks.Finite()])
    with pytest.raises(TypeError, match="is not a check"):
        checks.validate([lambda ctx: True])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="ssim.*use similarity='spearman'"):
        checks.run([checks.ParameterRandomization("saliency", similarity="ssim")], nn.Sequential(nn.Linear(4, 2)), ProbeSet(torch.rand(3, 4)))


def test_parameter_randomization_of_a_bare_layer_randomises_it_all() -> None:
    net = nn.Linear(6, 3)
    assert F.top_layers(net) == [""]
    r = checks.run([checks.ParameterRandomization("saliency", max_similarity=0.9)], net, ProbeSet(torch.rand(4, 6)))[0]
    assert list(r.details) == ["step/"] and r.value < 0.9


def test_check_result_to_dict_is_json_friendly() -> None:
    import json

    r = checks.CheckResult("a", float("nan"), False, "why", details={"step/1": float("inf")})
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d == {"name": "a", "value": "nan", "passed": False, "skipped": False, "reason": "why", "bound": None,
                 "direction": None, "details": {"step/1": "inf"}}


def test_checks_and_functional_import_without_lightning() -> None:
    code = (
        "import sys\n"
        "for m in ('pytorch_lightning', 'lightning', 'lightning.pytorch', 'tensorboard'): sys.modules[m] = None\n"
        "from lightning_xai import checks, functional\n"
        "import lightning_xai.functional.checks\n"
        "print('ok')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize(
    "make",
    [
        lambda m: checks.RelevanceMass(m),
        lambda m: checks.PointingGame(m),
        lambda m: checks.SpuriousRegion(torch.ones(4, 4), m),
        lambda m: checks.TokenMass([3], m),
    ],
    ids=["relevance_mass", "pointing_game", "spurious_region", "token_mass"],
)
def test_checks_that_lay_masks_over_maps_refuse_layer_resolution_maps(make):
    with pytest.raises(ValueError, match="needs maps shaped like the inputs.*layer's resolution: drop upsample=False"):
        make({"grad_cam": {"upsample": False}})
    F.register_method("at_a_layer", lambda model, inputs, target=None: inputs, resolution="layer")
    try:
        with pytest.raises(ValueError, match="layer's resolution: use a method whose maps have the inputs' shape"):
            make("at_a_layer")
    finally:
        F.unregister_method("at_a_layer")
    captum = pytest.importorskip("captum.attr")
    with pytest.raises(ValueError, match="layer's resolution: drop upsample=False"):
        make({captum.LayerGradCam: {"layer": "conv", "upsample": False}})
    assert make({"grad_cam": {}}).name and make({captum.LayerGradCam: {"layer": "conv"}}).name  # upsampled: accepted
