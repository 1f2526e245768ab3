"""Drift metrics against scipy / sklearn / torchmetrics, known answers, degenerate inputs, bad arguments."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import ndcg_score

from lightning_xai import functional as F
from lightning_xai.functional import DegenerateInputWarning

TOL = 1e-5


def _pairs(seed: int = 0, count: int = 120):
    """Random float vectors and tie-heavy integer-valued vectors of assorted lengths (non-constant)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n = int(rng.integers(2, 60))
        if len(out) % 2:
            a, b = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
        else:
            a, b = rng.random(n), rng.random(n)
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out.append((a, b))
    return out


def _t(x) -> torch.Tensor:  # noqa: ANN001
    return torch.tensor(x, dtype=torch.float64)


# ------------------------------------------------------------------------------------ references
@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_rank_correlation_matches_scipy_random_and_ties(method):
    ref = stats.spearmanr if method == "spearman" else stats.kendalltau
    worst = 0.0
    ties = 0
    for a, b in _pairs():
        ties += len(np.unique(a)) < len(a)
        ours = F.rank_correlation(_t(a), _t(b), method)
        worst = max(worst, abs(ours - float(ref(a, b).statistic)))
    assert ties >= 50  # the tie-heavy half really has ties
    assert worst <= TOL


def test_rank_correlation_float32_input_matches_scipy():
    a, b = np.float32(np.random.default_rng(3).random(30)), np.float32(np.random.default_rng(4).random(30))
    assert abs(F.rank_correlation(torch.from_numpy(a), torch.from_numpy(b)) - stats.spearmanr(a, b).statistic) <= TOL


def test_topk_overlap_matches_set_definition():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(2, 40))
        k = int(rng.integers(1, n + 3))
        a, b = rng.random(n), rng.random(n)  # distinct values: the top-k sets are unambiguous
        kk = min(k, n)
        sa, sb = set(np.argsort(-a)[:kk]), set(np.argsort(-b)[:kk])
        assert F.topk_overlap(_t(a), _t(b), k) == pytest.approx(len(sa & sb) / len(sa | sb), abs=1e-12)


def test_ndcg_matches_sklearn_random_and_ties():
    worst = 0.0
    for a, b in _pairs(seed=2):
        worst = max(worst, abs(F.ndcg(_t(a), _t(b)) - ndcg_score([a], [b])))
    assert worst <= TOL


def test_ndcg_current_may_be_signed_and_matches_sklearn():
    rng = np.random.default_rng(5)
    ref, cur = rng.random(12), rng.normal(size=12)
    assert F.ndcg(_t(ref), _t(cur)) == pytest.approx(ndcg_score([ref], [cur]), abs=TOL)


def test_js_divergence_matches_scipy_base2():
    worst = 0.0
    for a, b in _pairs(seed=3):
        worst = max(worst, abs(F.js_divergence(_t(a), _t(b)) - jensenshannon(a, b, base=2) ** 2))
    assert worst <= TOL


def test_js_divergence_with_zero_entries_matches_scipy():
    a, b = np.array([0.0, 1.0, 2.0, 0.0]), np.array([3.0, 0.0, 1.0, 0.0])
    assert F.js_divergence(_t(a), _t(b)) == pytest.approx(jensenshannon(a, b, base=2) ** 2, abs=TOL)


def test_map_spearman_matches_scipy_per_sample():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 5, (6, 5, 5)).astype(float)  # tie-heavy maps
    b = rng.random((6, 5, 5))
    ours = F.map_spearman(_t(a), _t(b))
    expected = [stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(6)]
    assert ours.shape == (6,)
    assert torch.allclose(ours, _t(expected), atol=TOL)


# ------------------------------------------------------------------------------------ SSIM
def _brute_ssim(x: np.ndarray, y: np.ndarray, win: int, sigma: float = 1.5) -> float:
    """Wang et al. (2004) SSIM written out window by window (Gaussian weights, 'valid' windows)."""
    c1, c2 = 0.01**2, 0.03**2
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    values = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i : i + win, j : j + win], y[i : i + win, j : j + win]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_map_ssim_matches_written_out_definition_on_small_maps():
    rng = np.random.default_rng(6)
    a, b = rng.random((4, 8, 8)), rng.random((4, 8, 8))
    a[:, 2:5, 2:5] += 2  # some structure shared by both
    b[:, 2:5, 2:5] += 2
    ours = F.map_ssim(_t(a), _t(b))
    for i in range(4):  # 8x8 maps: the window shrinks to 7
        expected = _brute_ssim(a[i] / a[i].max(), b[i] / b[i].max(), win=7)
        assert ours[i].item() == pytest.approx(expected, abs=TOL)
    expected5 = _brute_ssim(a[0] / a[0].max(), b[0] / b[0].max(), win=5)
    assert F.map_ssim(_t(a[:1]), _t(b[:1]), win_size=5).item() == pytest.approx(expected5, abs=TOL)


def test_map_ssim_matches_torchmetrics_away_from_the_border():
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    rng = np.random.default_rng(7)
    a, b = _t(rng.random((3, 24, 24))), _t(rng.random((3, 24, 24)))
    a, b = a / a.amax((1, 2), keepdim=True), b / b.amax((1, 2), keepdim=True)
    _, full = tm_ssim(
        a[:, None], b[:, None], gaussian_kernel=True, sigma=1.5, kernel_size=11,
        data_range=1.0, reduction="none", return_full_image=True,
    )
    interior = full[:, 0, 5:-5, 5:-5].reshape(3, -1).mean(-1)  # windows that do not touch the padding
    assert torch.allclose(F.map_ssim(a, b), interior.double(), atol=TOL)


def test_map_ssim_global_for_vectors_known_answer():
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    y = np.array([[4.0, 3.0, 2.0, 1.0]])
    xs, ys = x / 4, y / 4  # each scaled by its max
    mx, my = xs.mean(), ys.mean()
    vx, vy, cxy = xs.var(), ys.var(), ((xs - mx) * (ys - my)).mean()
    c1, c2 = 1e-4, 9e-4
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert F.map_ssim(_t(x), _t(y)).item() == pytest.approx(expected, abs=1e-12)
    assert expected < 0  # anti-correlated


def test_map_ssim_reduces_image_channels():
    a = torch.rand(2, 3, 8, 8)
    assert torch.allclose(F.map_ssim(a, a.flip(-1)), F.map_ssim(F.per_sample_maps(a), F.per_sample_maps(a.flip(-1))))


# ------------------------------------------------------------------------------------ known cases
def test_identical_vectors():
    v = torch.tensor([0.3, 0.1, 0.5, 0.05, 0.05])
    assert F.rank_correlation(v, v) == 1.0
    assert F.rank_correlation(v, v, "kendall") == pytest.approx(1.0, abs=1e-12)
    assert F.topk_overlap(v, v, 3) == 1.0
    assert F.ndcg(v, v) == 1.0
    assert F.js_divergence(v, v) == 0.0
    assert F.js_divergence(v, 7 * v) == pytest.approx(0.0, abs=1e-15)
    maps = torch.rand(3, 6, 6)
    assert torch.equal(F.map_spearman(maps, maps), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(F.map_ssim(maps, maps), torch.ones(3, dtype=torch.float64))


def test_reversed_ranking():
    v = torch.arange(1.0, 11.0)
    r = v.flip(0)
    assert F.rank_correlation(v, r) == -1.0
    assert F.rank_correlation(v, r, "kendall") == pytest.approx(-1.0, abs=1e-12)
    assert F.topk_overlap(v, r, 3) == 0.0
    assert F.topk_overlap(v, r, 10) == 1.0  # all features: the same set
    assert F.ndcg(v, r) == pytest.approx(ndcg_score([v.numpy()], [r.numpy()]), abs=1e-12)
    assert F.ndcg(v, r) < 0.9  # Clarify would alert
    assert F.js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 1.0
    m = torch.rand(2, 5, 5)
    assert torch.allclose(F.map_spearman(m, -m), -torch.ones(2, dtype=torch.float64))


def test_topk_ties_broken_by_lower_index():
    a = torch.tensor([1.0, 1.0, 1.0, 0.0])
    b = torch.tensor([0.0, 1.0, 1.0, 1.0])
    # a's top-2 = {0, 1}, b's top-2 = {1, 2}
    assert F.topk_overlap(a, b, 2) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------ degenerate inputs
def test_constant_vectors_give_defined_values_and_warn():
    zero, ramp = torch.zeros(5), torch.arange(5.0)
    for method in ("spearman", "kendall"):
        with pytest.warns(DegenerateInputWarning, match="both vectors are constant"):
            assert F.rank_correlation(zero, torch.full((5,), 3.0), method) == 1.0
        with pytest.warns(DegenerateInputWarning, match="one vector is constant"):
            assert F.rank_correlation(zero, ramp, method) == 0.0
    with pytest.warns(DegenerateInputWarning, match="constant"):
        assert F.topk_overlap(zero, ramp, 2) == 0.0  # {0, 1} vs {4, 3}
    with pytest.warns(DegenerateInputWarning, match="all zero"):
        assert F.ndcg(zero, ramp) == 0.0
    assert ndcg_score([zero.numpy()], [ramp.numpy()]) == 0.0  # the same as sklearn
    with pytest.warns(DegenerateInputWarning, match="constant"):
        value = F.ndcg(ramp, zero)
    assert value == pytest.approx(ndcg_score([ramp.numpy()], [zero.numpy()]), abs=TOL)
    with pytest.warns(DegenerateInputWarning, match="all zero"):
        assert F.js_divergence(zero, zero) == 0.0
    with pytest.warns(DegenerateInputWarning, match="uniform"):
        assert F.js_divergence(zero, ramp) == pytest.approx(F.js_divergence(torch.ones(5), ramp), abs=1e-15)


def test_all_zero_maps_give_defined_values_and_warn():
    zero = torch.zeros(2, 8, 8)
    live = torch.rand(2, 8, 8)
    with pytest.warns(DegenerateInputWarning, match="constant map"):
        s = F.map_spearman(zero, live)
    assert s.tolist() == [0.0, 0.0]
    with pytest.warns(DegenerateInputWarning, match="constant map"):
        assert F.map_spearman(zero, zero).tolist() == [1.0, 1.0]
    with pytest.warns(DegenerateInputWarning, match="all-zero map"):
        both = F.map_ssim(zero, zero)
    assert torch.allclose(both, torch.ones(2, dtype=torch.float64))
    with pytest.warns(DegenerateInputWarning, match="all-zero map"):
        one = F.map_ssim(zero, live)
    assert bool(torch.isfinite(one).all()) and bool((one.abs() < 0.05).all())


def test_nan_input_gives_nan():
    v = torch.tensor([0.1, float("nan"), 0.3])
    w = torch.tensor([0.1, 0.2, 0.3])
    for value in (
        F.rank_correlation(v, w), F.rank_correlation(w, v, "kendall"), F.topk_overlap(v, w, 1),
        F.ndcg(w, v), F.js_divergence(v, w),
    ):
        assert math.isnan(value)
    m = torch.rand(2, 4, 4)
    bad = m.clone()
    bad[1, 0, 0] = float("nan")
    assert F.map_spearman(m, bad).isnan().tolist() == [False, True]
    assert F.map_ssim(m, bad).isnan().tolist() == [False, True]


def test_degenerate_inputs_never_give_nan():
    cases = [torch.zeros(6), torch.ones(6), torch.arange(6.0), torch.tensor([0, 0, 0, 0, 0, 1.0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)
        for a in cases:
            for b in cases:
                scores = F.drift_scores(a, b, a.reshape(1, 2, 3), b.reshape(1, 2, 3), top_k=2)
                assert set(scores) == set(F.DRIFT_METRICS)
                assert all(math.isfinite(v) for v in scores.values()), (a, b, scores)


# ------------------------------------------------------------------------------------ importance
def test_feature_importance_tabular_is_mean_abs():
    attr = torch.tensor([[1.0, -2.0, 0.0], [-3.0, 0.0, 0.5]])
    assert F.feature_importance(attr).tolist() == [2.0, 1.0, 0.25]
    assert F.importance_names((3,)) == ["f0", "f1", "f2"]


def test_feature_importance_image_grid_cells():
    attr = torch.randn(5, 2, 8, 12)
    got = F.feature_importance(attr, grid=(2, 3))
    mean_abs = attr.double().abs().mean(0)
    expected = torch.stack(
        [mean_abs[c, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].mean() for c in range(2) for i in range(2) for j in range(3)]
    )
    assert torch.allclose(got, expected)
    names = F.importance_names((2, 8, 12), grid=(2, 3))
    assert len(names) == 12 and names[0] == "ch0[0,0]" and names[-1] == "ch1[1,2]"
    # a grid finer than the image is clipped to it
    assert F.feature_importance(torch.rand(2, 1, 3, 3), grid=8).shape == (9,)
    assert len(F.importance_names((1, 3, 3), grid=8)) == 9


def test_drift_scores_names_and_map_metrics_need_maps():
    v, w = torch.rand(6), torch.rand(6)
    assert list(F.drift_scores(v, w, top_k=2)) == list(F.VECTOR_METRICS)
    full = F.drift_scores(v, w, torch.rand(3, 4, 4), torch.rand(3, 4, 4))
    assert list(full) == list(F.DRIFT_METRICS)
    assert full["kendall"] == pytest.approx(stats.kendalltau(v.numpy(), w.numpy()).statistic, abs=TOL)


# ------------------------------------------------------------------------------------ errors
def test_bad_arguments_raise_clear_errors():
    v = torch.rand(4)
    with pytest.raises(ValueError, match="'spearman' or 'kendall'"):
        F.rank_correlation(v, v, "pearson")
    with pytest.raises(ValueError, match="different lengths"):
        F.rank_correlation(v, torch.rand(5))
    with pytest.raises(ValueError, match="1-D importance vectors"):
        F.js_divergence(torch.rand(2, 2), torch.rand(2, 2))
    with pytest.raises(ValueError, match="k >= 1"):
        F.topk_overlap(v, v, 0)
    with pytest.raises(ValueError, match="negative values"):
        F.ndcg(torch.tensor([0.5, -0.1]), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="negative values"):
        F.js_divergence(torch.tensor([0.5, -0.1]), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="different shapes"):
        F.map_ssim(torch.rand(2, 4, 4), torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="odd positive"):
        F.map_ssim(torch.rand(2, 8, 8), torch.rand(2, 8, 8), win_size=4)
    with pytest.raises(ValueError, match="known ones are spearman, kendall, topk_overlap, ndcg, js_divergence"):
        F.check_metrics(["spearman", "pearson"])
    with pytest.raises(ValueError, match="grid"):
        F.feature_importance(torch.rand(2, 1, 4, 4), grid=(0, 2))


def test_drift_module_imports_without_lightning():
    code = (
        "import sys\n"
        "for name in ('pytorch_lightning', 'lightning', 'tensorboard'):\n"
        "    sys.modules[name] = None\n"
        "from lightning_xai.functional import drift, rank_correlation, map_ssim, heatmap_chart\n"
        "import torch\n"
        "print(rank_correlation(torch.tensor([1., 2., 3.]), torch.tensor([1., 3., 2.])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.5"


# ------------------------------------------------------------------------------------ trajectory picture
def test_heatmap_chart_layout_nan_and_row_cap():
    m = torch.zeros(3, 4)
    m[1, 2] = 1.0
    m[2, 0] = float("nan")
    img = F.heatmap_chart(m, ["a", "b", "c"], ["0", "1", "2", "3"])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # the grid, found by its first row (all zero: the colormap's dark end) and first column (two zeros, NaN)
    dark = (F.colormap(np.array(0.0), False) * 255).astype(np.uint8)
    ys, xs = np.nonzero((img[:-28] == dark).all(axis=2))  # above the colour bar (28 px), which starts dark too
    x0, y0 = xs.min(), ys.min()
    cell_w = int(((img[y0] == dark).all(axis=1)).sum()) // 4
    cell_h = int(((img[:-28, x0] == dark).all(axis=1)).sum()) // 2
    assert cell_h == 18 and 28 <= cell_w <= 40 and img.shape[1] <= F.render.HEATMAP_WIDTH + 6

    def cell(r, c):  # noqa: ANN001, ANN202
        return img[y0 + cell_h * r + cell_h // 2, x0 + cell_w * c + cell_w // 2]
    assert tuple(cell(2, 0)) == (200, 200, 200)  # NaN: grey
    assert tuple(cell(1, 2)) == tuple((F.colormap(np.array(1.0), False) * 255).astype(np.uint8))  # the max: yellow
    assert tuple(cell(0, 0)) == tuple((F.colormap(np.array(0.0), False) * 255).astype(np.uint8))  # zero: dark
    many = torch.rand(100, 5)
    many[77] = 5.0
    small = F.heatmap_chart(many, [f"r{i}" for i in range(100)], max_rows=10)
    assert small.shape[0] < F.heatmap_chart(many, [f"r{i}" for i in range(100)]).shape[0]
    with pytest.raises(ValueError, match="row labels"):
        F.heatmap_chart(torch.rand(2, 2), ["only one"])
    with pytest.raises(ValueError, match="non-empty"):
        F.heatmap_chart(torch.rand(0, 2))
