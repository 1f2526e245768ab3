"""Feature-importance drift: how much what a model relies on changed between two epochs.

Two kinds of input are compared:

- **global importance vectors** (one value per feature, see :func:`feature_importance`): mean
  ``|attribution|`` over the probe per input feature for tabular inputs; for images per channel and
  per cell of a coarse spatial grid, so that the vector stays short and meaningful;
- **per-sample maps** (see :func:`per_sample_maps`): one map per probe sample, compared sample by
  sample and averaged over the probe.

Metrics (the names the callbacks log under ``xai/drift/<method>/<metric>/{prev,ref}``):

============== =========================================================== ==================
name           definition                                                  identical inputs
============== =========================================================== ==================
spearman       Spearman rank correlation of the vectors (average ranks)    1
kendall        Kendall tau-b of the vectors                                1
topk_overlap   Jaccard index of the top-k feature sets                     1
ndcg           NDCG of the current ranking, reference values as relevance  1
js_divergence  Jensen-Shannon divergence (base 2) of the normalised        0
               vectors, in [0, 1]
map_spearman   mean over the probe of the per-sample Spearman correlation  1
map_ssim       mean over the probe of the per-sample SSIM                  1
============== =========================================================== ==================

Rank statistics follow scipy (``scipy.stats.spearmanr``, ``scipy.stats.kendalltau``), NDCG follows
``sklearn.metrics.ndcg_score`` (the definition SageMaker Clarify uses for attribution drift), and the
Jensen-Shannon divergence equals ``scipy.spatial.distance.jensenshannon(a, b, base=2) ** 2``.
The test suite checks each against its reference.

Degenerate inputs (the early epochs of a dead model give constant or all-zero importances) get a
defined value and a :class:`DegenerateInputWarning`, never NaN; NaN in an input gives NaN, so that a
check can see it. The definitions:

- rank correlations: a constant vector has no ranking; two constant vectors agree (``1``), a
  constant and a non-constant one share no ranking information (``0``). scipy returns NaN there.
- ``topk_overlap``: ties are broken by the lower feature index, so a constant vector's top-k are its
  first ``k`` features (warned).
- ``ndcg``: an all-zero reference has no relevant feature, and the score is ``0`` (sklearn's value);
  a constant current vector ranks all features equal, and the score is the tie-averaged gain
  (sklearn's value), both warned.
- ``js_divergence``: an all-zero vector is treated as uniform (no feature stands out), as
  :mod:`lightning_xai.functional.summary` does.
- ``map_ssim``: SSIM's stabilising constants make it defined everywhere: two all-zero maps score
  ``1``, an all-zero and a non-zero map score near ``0`` (warned).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._sort import argsort

__all__ = [
    "GridLike",
    "check_grid",
    "DRIFT_METRICS",
    "VECTOR_METRICS",
    "MAP_METRICS",
    "DegenerateInputWarning",
    "rank_correlation",
    "spearman",
    "topk_overlap",
    "ndcg",
    "js_divergence",
    "per_sample_maps",
    "map_spearman",
    "map_ssim",
    "feature_importance",
    "importance_names",
    "token_vocabulary",
    "token_bag",
    "drift_scores",
    "check_metrics",
]

#: Metrics on global importance vectors.
VECTOR_METRICS: Tuple[str, ...] = ("spearman", "kendall", "topk_overlap", "ndcg", "js_divergence")
#: Metrics on per-sample maps (mean over the probe).
MAP_METRICS: Tuple[str, ...] = ("map_spearman", "map_ssim")
#: Every drift metric, by the name the callbacks log it under.
DRIFT_METRICS: Tuple[str, ...] = VECTOR_METRICS + MAP_METRICS


class DegenerateInputWarning(UserWarning):
    """A drift metric got a constant or all-zero input and returned its documented defined value."""


def _warn(message: str) -> None:
    warnings.warn(message, DegenerateInputWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------
def _vectors(a: Tensor, b: Tensor, what: str) -> Tuple[Tensor, Tensor]:
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if a.dim() != 1 or b.dim() != 1:
        raise ValueError(
            f"{what} compares two 1-D importance vectors, got shapes {tuple(a.shape)} and {tuple(b.shape)}; "
            "build them with feature_importance(attributions)"
        )
    if a.shape != b.shape:
        raise ValueError(f"{what}: the vectors have different lengths ({a.shape[0]} and {b.shape[0]} features)")
    if a.numel() == 0:
        raise ValueError(f"{what}: the vectors are empty")
    return a.detach().double().cpu(), b.detach().double().cpu()


def _nonnegative(x: Tensor, what: str, name: str) -> None:
    if bool((x < 0).any()):
        raise ValueError(
            f"{what}: {name} has negative values (min {float(x.min()):.3g}); it takes importances >= 0, "
            "such as mean |attribution| per feature from feature_importance()"
        )


def _has_nan(*xs: Tensor) -> bool:
    return any(bool(torch.isnan(x).any()) for x in xs)


def _constant_rows(x: Tensor) -> Tensor:
    """Rows (last dim) whose values are all equal."""
    return (x == x[..., :1]).all(-1)


# ----------------------------------------------------------------------------------------------
# rank correlations
# ----------------------------------------------------------------------------------------------
def _average_ranks(x: Tensor) -> Tensor:
    """Ranks (1-based) along the last dimension, ties given the mean of their ranks (scipy's ``rankdata``)."""
    n = x.shape[-1]
    order = argsort(x)  # ties form one group whatever their order inside it
    values = x.gather(-1, order)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[..., 1:] = values[..., 1:] != values[..., :-1]
    group = starts.long().cumsum(-1) - 1
    position = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand_as(values)
    sums = torch.zeros_like(position).scatter_add_(-1, group, position)
    counts = torch.zeros_like(position).scatter_add_(-1, group, torch.ones_like(position))
    mean_rank = sums.gather(-1, group) / counts.gather(-1, group)
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    da = a - a.mean(-1, keepdim=True)
    db = b - b.mean(-1, keepdim=True)
    r = (da * db).sum(-1) / torch.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    return r.clamp(-1.0, 1.0)


#: per-sample statistics (map Spearman, SSIM, summaries) run over this many probe samples at a time, so
#: that their temporaries (ranks, sort indices, windowed moments) stay bounded whatever the probe size
ROWS_PER_CHUNK = 64


def in_row_chunks(fn: Any, *tensors: Tensor, rows: Optional[int] = None) -> Any:
    """``fn(*tensors)`` computed ``rows`` samples at a time and concatenated along the first dimension
    (a tensor, or a tuple of tensors). Exact for functions that treat each sample on its own.

    Example:
        >>> import torch
        >>> x = torch.arange(10.).reshape(5, 2)
        >>> torch.equal(in_row_chunks(lambda t: t.sum(1), x, rows=2), x.sum(1))
        True
    """
    rows = ROWS_PER_CHUNK if rows is None else rows
    n = tensors[0].shape[0]
    if n <= rows:
        return fn(*tensors)
    parts = [fn(*(t[i : i + rows] for t in tensors)) for i in range(0, n, rows)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def _spearman_rows(a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
    """Spearman per row of two (R, n) float64 tensors, ``ROWS_PER_CHUNK`` rows at a time; also the mask
    of degenerate rows."""
    r, degenerate = in_row_chunks(_spearman_rows_at_once, a, b)
    return r, degenerate


def _spearman_rows_at_once(a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
    """Spearman per row of two (R, n) float64 tensors; also the mask of degenerate rows."""
    ca, cb = _constant_rows(a), _constant_rows(b)
    degenerate = ca | cb
    r = _pearson_rows(_average_ranks(a), _average_ranks(b))
    defined = torch.where(ca & cb, torch.ones_like(r), torch.zeros_like(r))
    r = torch.where(degenerate, defined, r)
    nan = torch.isnan(a).any(-1) | torch.isnan(b).any(-1)
    return torch.where(nan, torch.full_like(r, float("nan")), r), degenerate & ~nan


def spearman(a: Tensor, b: Tensor, constant: str = "nan") -> Tensor:
    """Spearman rank correlation of each sample (row) of ``a`` with the same sample of ``b``: shape ``(N,)``.

    The one Spearman of the library: :func:`rank_correlation`, :func:`map_spearman` and
    :func:`~lightning_xai.functional.map_similarity` are built on it. Samples are flattened
    (``(N, ...)`` -> ``(N, D)``); ties get average ranks, as ``scipy.stats.spearmanr``. A constant
    row has no ranking: ``constant="nan"`` gives NaN there (scipy's answer), ``constant="defined"``
    gives 1 when both rows are constant and 0 when one is (what drift and randomisation tests use).
    A row with NaN gives NaN.

    Example:
        >>> import torch
        >>> spearman(torch.tensor([[1., 2., 3., 4.]]), torch.tensor([[10., 20., 40., 30.]]))
        tensor([0.8000], dtype=torch.float64)
        >>> spearman(torch.ones(1, 3), torch.ones(1, 3)), spearman(torch.ones(1, 3), torch.ones(1, 3), "defined")
        (tensor([nan], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    if constant not in ("nan", "defined"):
        raise ValueError(f"constant must be 'nan' or 'defined', got {constant!r}")
    if a.shape != b.shape:
        raise ValueError(f"spearman needs two batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    r, degenerate = _spearman_rows(a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double())
    if constant == "nan":
        r = torch.where(degenerate, torch.full_like(r, float("nan")), r)
    return r


def rank_correlation(a: Tensor, b: Tensor, method: str = "spearman") -> float:
    """Rank correlation of two importance vectors: Spearman's rho or Kendall's tau-b, as scipy computes them.

    Ties get the mean of their ranks (Spearman) or are corrected for (tau-b), as in
    ``scipy.stats.spearmanr`` and ``scipy.stats.kendalltau``. A constant vector has no ranking: the
    result is ``1.0`` when both vectors are constant, ``0.0`` when one is, with a
    :class:`DegenerateInputWarning` (scipy returns NaN). NaN in an input gives NaN.

    Kendall's tau-b is computed by ``torchmetrics.functional.kendall_rank_corrcoef``; Spearman's rho
    here, exactly (torchmetrics' version adds ``1e-6`` to the denominator) and batched for
    :func:`map_spearman`.

    Example:
        >>> import torch
        >>> a = torch.tensor([0.1, 0.4, 0.2, 0.3])
        >>> rank_correlation(a, a), rank_correlation(a, -a)
        (1.0, -1.0)
        >>> round(rank_correlation(a, torch.tensor([1., 3., 3., 2.]), "kendall"), 4)
        0.5477
    """
    if method not in ("spearman", "kendall"):
        raise ValueError(f"unknown rank correlation method {method!r}; use 'spearman' or 'kendall'")
    a, b = _vectors(a, b, "rank_correlation")
    if _has_nan(a, b):
        return float("nan")
    ca, cb = bool(_constant_rows(a)), bool(_constant_rows(b))
    if ca or cb:
        value = 1.0 if ca and cb else 0.0
        _warn(
            f"rank_correlation({method}): {'both vectors are' if ca and cb else 'one vector is'} constant "
            f"(no ranking, e.g. all-zero importances of a dead model); defined as {value}"
        )
        return value
    if method == "spearman":
        r, _ = _spearman_rows(a[None], b[None])
        return float(r[0])
    from torchmetrics.functional import kendall_rank_corrcoef

    tau = kendall_rank_corrcoef(a, b, variant="b")  # a tensor (a tuple only with t_test=True)
    assert isinstance(tau, Tensor)
    return float(tau.clamp(-1.0, 1.0))


# ----------------------------------------------------------------------------------------------
# top-k overlap, NDCG, Jensen-Shannon
# ----------------------------------------------------------------------------------------------
def _top_indices(x: Tensor, k: int) -> List[int]:
    order = torch.sort(-x, stable=True).indices  # ties: lower index first
    return order[:k].tolist()


def topk_overlap(a: Tensor, b: Tensor, k: int = 5) -> float:
    """Jaccard index ``|A & B| / |A | B|`` of the sets of the ``k`` most important features of each vector.

    ``1.0`` when both vectors put the same ``k`` features on top, ``0.0`` when they share none. Ties
    are broken by the lower feature index; ``k`` larger than the number of features is clipped to it.
    A constant vector (no top features) is warned about. NaN in an input gives NaN.

    Example:
        >>> import torch
        >>> topk_overlap(torch.tensor([5., 4., 3., 2., 1.]), torch.tensor([4., 5., 1., 2., 3.]), k=2)
        1.0
        >>> topk_overlap(torch.tensor([5., 4., 3., 2., 1.]), torch.tensor([1., 2., 3., 4., 5.]), k=2)
        0.0
        >>> round(topk_overlap(torch.tensor([5., 4., 3., 2.]), torch.tensor([5., 1., 4., 3.]), k=2), 4)
        0.3333
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"topk_overlap needs k >= 1 (an int), got {k!r}")
    a, b = _vectors(a, b, "topk_overlap")
    if _has_nan(a, b):
        return float("nan")
    for name, x in (("first", a), ("second", b)):
        if x.numel() > 1 and bool(_constant_rows(x)):
            _warn(
                f"topk_overlap: the {name} vector is constant (no top features, e.g. all-zero importances); "
                "its top-k are taken as its first k features"
            )
    k = min(k, a.numel())
    sa, sb = set(_top_indices(a, k)), set(_top_indices(b, k))
    return len(sa & sb) / len(sa | sb)


def ndcg(reference: Tensor, current: Tensor) -> float:
    """NDCG of the ranking by ``current``, with ``reference`` values as relevance (SageMaker Clarify's score).

    Equal to ``sklearn.metrics.ndcg_score([reference], [current])``: the discounted cumulative gain
    ``sum_i rel_i / log2(i + 1)`` of the reference importances taken in the order of the current
    ones (ties in ``current`` averaged, as sklearn does), divided by the same sum in the reference's
    own order. ``1.0`` when the current ranking puts features in the reference's order; Clarify
    alerts below 0.90. Computed in float64 here: torchmetrics' ``retrieval_normalized_dcg`` works in
    float32 (identical vectors score 0.99999994).

    ``reference`` must be >= 0 (importances). An all-zero reference has no relevant feature: the
    score is ``0.0`` (sklearn's value), warned. A constant ``current`` ranks all features equal: the
    score is the tie-averaged gain, warned. NaN in an input gives NaN.

    Example:
        >>> import torch
        >>> ref = torch.tensor([0.5, 0.3, 0.2, 0.0])
        >>> ndcg(ref, ref)
        1.0
        >>> round(ndcg(ref, torch.tensor([0.0, 0.2, 0.3, 0.5])), 4)
        0.6228
    """
    reference, current = _vectors(reference, current, "ndcg")
    if _has_nan(reference, current):
        return float("nan")
    _nonnegative(reference, "ndcg", "reference")
    if bool((reference == 0).all()):
        _warn("ndcg: the reference importances are all zero (no relevant feature); defined as 0.0, as sklearn does")
        return 0.0
    if current.numel() > 1 and bool(_constant_rows(current)):
        _warn("ndcg: the current importances are constant (no ranking); the score averages over the ties")
    n = reference.numel()
    discount = 1.0 / torch.log2(torch.arange(n, dtype=torch.float64) + 2.0)
    # groups of tied current values, best first; each group shares its positions' discounts evenly
    _, group, counts = torch.unique(-current, return_inverse=True, return_counts=True)
    mean_gain = torch.zeros(len(counts), dtype=torch.float64).scatter_add_(0, group, reference) / counts
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), discount.cumsum(0)])
    ends = counts.cumsum(0)
    group_discount = cumulative[ends] - cumulative[ends - counts]
    dcg = (mean_gain * group_discount).sum()
    ideal = (torch.sort(reference, descending=True).values * discount).sum()
    return float((dcg / ideal).clamp(0.0, 1.0))


def _distribution(x: Tensor, which: str) -> Tensor:
    total = x.sum()
    if total == 0:
        _warn(
            f"js_divergence: the {which} importances are all zero; treated as uniform (no feature stands out)"
        )
        return torch.full_like(x, 1.0 / x.numel())
    return x / total


def js_divergence(a: Tensor, b: Tensor) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of the two importance vectors normalised to sum 1.

    ``JS(p, q) = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2`` and ``0 log 0 = 0``. ``0``
    for proportional vectors, ``1`` for vectors with disjoint supports. Equal to
    ``scipy.spatial.distance.jensenshannon(a, b, base=2) ** 2``. Inputs must be >= 0; an all-zero
    vector is treated as uniform (warned). NaN in an input gives NaN.

    Example:
        >>> import torch
        >>> js_divergence(torch.tensor([1., 2., 3.]), torch.tensor([2., 4., 6.]))
        0.0
        >>> js_divergence(torch.tensor([1., 0.]), torch.tensor([0., 1.]))
        1.0
    """
    a, b = _vectors(a, b, "js_divergence")
    if _has_nan(a, b):
        return float("nan")
    _nonnegative(a, "js_divergence", "the first vector")
    _nonnegative(b, "js_divergence", "the second vector")
    p, q = _distribution(a, "first"), _distribution(b, "second")
    m = (p + q) / 2

    def kl(x: Tensor) -> Tensor:
        return torch.where(x > 0, x * torch.log2(torch.where(x > 0, x / m, torch.ones_like(x))), torch.zeros_like(x)).sum()

    return float(((kl(p) + kl(q)) / 2).clamp(0.0, 1.0))


# ----------------------------------------------------------------------------------------------
# per-sample maps
# ----------------------------------------------------------------------------------------------
def per_sample_maps(attributions: Tensor) -> Tensor:
    """The per-sample maps that :func:`map_spearman` and :func:`map_ssim` compare, as float64 on CPU.

    Images ``(N, C, H, W)`` give ``(N, H, W)``: ``|attribution|`` summed over the channels. Other
    inputs ``(N, ...)`` give ``(N, D)``: ``|attribution|`` flattened per sample.

    Example:
        >>> import torch
        >>> per_sample_maps(torch.ones(2, 3, 4, 5)).shape, per_sample_maps(-torch.ones(2, 7))[0, 0].item()
        (torch.Size([2, 4, 5]), 1.0)
    """
    a = torch.as_tensor(attributions).detach()
    if a.dim() < 2:
        raise ValueError(f"per_sample_maps expects attributions of shape (N, ...), got {tuple(a.shape)}")
    a = a.double().cpu().abs()
    if a.dim() == 4:
        return a.sum(1)
    return a.reshape(a.shape[0], -1)


def _maps(a: Tensor, b: Tensor, what: str) -> Tuple[Tensor, Tensor]:
    a = torch.as_tensor(a).detach()
    b = torch.as_tensor(b).detach()
    if a.shape != b.shape:
        raise ValueError(f"{what}: the maps have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2 or a.shape[0] == 0:
        raise ValueError(f"{what} compares (N, ...) maps, one per probe sample; got shape {tuple(a.shape)}")
    return a.double().cpu(), b.double().cpu()


def map_spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of each sample's map in ``a`` with the same sample's map in ``b``: shape ``(N,)``.

    Maps are flattened per sample and ranked as :func:`rank_correlation` does (constant maps give
    ``1`` if both are, ``0`` if one is, warned). Take ``.mean()`` for the probe's value.

    Example:
        >>> import torch
        >>> a = torch.rand(3, 4, 4)
        >>> map_spearman(a, a * 2).tolist(), map_spearman(a, -a).tolist()
        ([1.0, 1.0, 1.0], [-1.0, -1.0, -1.0])
    """
    a, b = _maps(a, b, "map_spearman")
    ra, rb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    r, degenerate = _spearman_rows(ra, rb)
    if bool(degenerate.any()):
        _warn(
            f"map_spearman: {int(degenerate.sum())} of {len(r)} samples have a constant map (e.g. all zero); "
            "their correlation is defined as 1 if both maps are constant, else 0"
        )
    return r


def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    w = g[:, None] * g[None, :]
    return w / w.sum()


def _ssim_global(x: Tensor, y: Tensor, c1: float, c2: float) -> Tensor:
    mx, my = x.mean(-1), y.mean(-1)
    vx = ((x - mx[:, None]) ** 2).mean(-1)
    vy = ((y - my[:, None]) ** 2).mean(-1)
    cxy = ((x - mx[:, None]) * (y - my[:, None])).mean(-1)
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def _ssim_windowed(x: Tensor, y: Tensor, win: int, sigma: float, c1: float, c2: float) -> Tensor:
    # The Gaussian window is the outer product of a 1-D Gaussian with itself: filter the five
    # statistics in one batch, along rows then columns ('valid': windows lie inside the map).
    g = _gaussian_window(win, sigma).sum(1)  # the 1-D Gaussian (rows of the normalised 2-D window sum to it)
    n = x.shape[0]
    stats = torch.cat([x, y, x * x, y * y, x * y])[:, None]
    f = torch.nn.functional.conv2d(torch.nn.functional.conv2d(stats, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mx, my, exx, eyy, exy = f.split(n)
    vx = (exx - mx * mx).clamp_min(0.0)
    vy = (eyy - my * my).clamp_min(0.0)
    cxy = exy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(s.shape[0], -1).mean(-1)


def map_ssim(
    a: Tensor, b: Tensor, win_size: Optional[int] = None, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> Tensor:
    """SSIM of each sample's map in ``a`` with the same sample's map in ``b``: shape ``(N,)``, at most 1.

    Each map is compared as ``|map| / max|map|`` (so SSIM measures the agreement of the pattern, not
    of the scale, which grows as a model trains) with data range 1 and the constants
    ``C1 = (k1)^2``, ``C2 = (k2)^2`` of Wang et al. (2004).

    - Spatial maps ``(N, H, W)`` (``(N, C, H, W)`` are first reduced by :func:`per_sample_maps`):
      Wang et al.'s SSIM with a Gaussian window (``sigma`` 1.5) of ``win_size`` pixels (default 11,
      shrunk to the largest odd size that fits maps smaller than that), statistics over the windows
      that lie inside the map ('valid'), averaged. For maps of 11x11 pixels or more this is
      ``skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
      data_range=1)``. torchmetrics' SSIM pads the border by reflection, which dominates small
      attribution maps (8x8 digits), hence this implementation; the test suite checks it against
      torchmetrics on the windows that do not touch the border.
    - Vectors ``(N, D)`` (tabular) and maps under 3 pixels on a side: one window over the whole map
      (global SSIM).

    Two all-zero maps score 1; an all-zero and a non-zero map score near 0 (warned).

    Example:
        >>> import torch
        >>> a = torch.rand(2, 8, 8)
        >>> torch.allclose(map_ssim(a, 3 * a), torch.ones(2, dtype=torch.float64))
        True
        >>> bool((map_ssim(a, torch.rand(2, 8, 8)) < 0.9).all())
        True
    """
    a, b = _maps(a, b, "map_ssim")
    if a.dim() == 4:
        a, b = per_sample_maps(a), per_sample_maps(b)
    elif a.dim() > 4:
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if win_size is not None and (not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0):
        raise ValueError(f"win_size must be an odd positive int, got {win_size!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a, b = a.abs(), b.abs()
    nan = torch.isnan(a.reshape(a.shape[0], -1)).any(-1) | torch.isnan(b.reshape(b.shape[0], -1)).any(-1)

    def scaled(t: Tensor) -> Tuple[Tensor, Tensor]:
        flat = t.reshape(t.shape[0], -1)
        top = torch.nan_to_num(flat, nan=0.0).amax(-1)
        shape = (-1,) + (1,) * (t.dim() - 1)
        return torch.where(top.reshape(shape) > 0, t / top.clamp_min(1e-300).reshape(shape), t), top == 0

    a, za = scaled(a)
    b, zb = scaled(b)
    if bool((za | zb).any()):
        _warn(
            f"map_ssim: {int((za | zb).sum())} of {a.shape[0]} samples have an all-zero map; SSIM is 1 where "
            "both maps are zero, near 0 where one is"
        )
    c1, c2 = k1**2, k2**2
    if a.dim() == 3 and min(a.shape[1:]) >= 3:
        win = win_size if win_size is not None else 11
        fit = min(a.shape[1:])
        win = min(win, fit if fit % 2 else fit - 1)
        s = in_row_chunks(lambda x, y: _ssim_windowed(x, y, win, sigma, c1, c2), a, b)
    else:
        s = in_row_chunks(lambda x, y: _ssim_global(x, y, c1, c2), a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    return torch.where(nan, torch.full_like(s, float("nan")), s)


# ----------------------------------------------------------------------------------------------
# global importance
# ----------------------------------------------------------------------------------------------
GridLike = Union[int, Sequence[int]]


def check_grid(grid: GridLike) -> Tuple[int, int]:
    """``grid`` (an int or a pair) as ``(rows, columns)``, or a ``ValueError``.

    Example:
        >>> check_grid(4), check_grid((2, 3))
        ((4, 4), (2, 3))
    """
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    try:
        gh, gw = (int(g) for g in grid)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"grid must be an int or a pair of ints (rows, columns), got {grid!r}") from None
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive, got {grid!r}")
    return gh, gw


def _fitted_grid(grid: GridLike, h: int, w: int) -> Tuple[int, int]:
    gh, gw = check_grid(grid)
    return min(gh, h), min(gw, w)


def _time_bins(grid: GridLike, t: int) -> int:
    """Time bins of a sequence: the grid's ``rows x columns`` cells laid along time (at most one per step)."""
    gh, gw = check_grid(grid)
    return min(gh * gw, t)


def _bin_edges(t: int, bins: int) -> List[Tuple[int, int]]:
    """``[start, end)`` of each bin as ``torch.nn.functional.adaptive_avg_pool1d`` draws them."""
    return [((i * t) // bins, -(-((i + 1) * t) // bins)) for i in range(bins)]


def feature_importance(attributions: Tensor, grid: GridLike = (4, 4)) -> Tensor:
    """Global importance: mean ``|attribution|`` over the probe, one value per feature (1-D, float64, CPU).

    - tabular ``(N, F)`` (and token maps ``(N, T)``, one value per position): one value per feature;
    - sequences ``(N, C, T)``: one value per channel and time bin (``C * bins``, channel-major): the
      mean ``|attribution|`` of the steps in the bin; the grid's ``rows x columns`` cells are laid
      along time (the default ``(4, 4)``: 16 bins; ``(1, 32)``: 32), at most one bin per step;
    - images ``(N, C, H, W)``: one value per channel and cell of a ``grid`` of rows x columns over the
      image (``C * rows * cols``, channel-major, then row-major): the mean ``|attribution|`` of the
      pixels in the cell (cells as ``torch.nn.functional.adaptive_avg_pool2d`` draws them; a grid
      finer than the image is clipped to it);
    - other shapes ``(N, ...)``: one value per element of a sample.

    :func:`importance_names` names the entries.

    Example:
        >>> import torch
        >>> feature_importance(torch.tensor([[1., -2.], [3., 0.]])).tolist()
        [2.0, 1.0]
        >>> feature_importance(torch.ones(5, 3, 32, 32), grid=(2, 4)).shape
        torch.Size([24])
        >>> feature_importance(torch.tensor([[[1., 1., 4., -4.]]]), grid=(1, 2)).tolist()
        [1.0, 4.0]
    """
    a = torch.as_tensor(attributions).detach()
    if a.dim() < 2 or a.shape[0] == 0:
        raise ValueError(f"feature_importance expects attributions of shape (N, ...), got {tuple(a.shape)}")
    mean_abs = a.double().cpu().abs().mean(0)
    if a.dim() == 4:
        c, h, w = mean_abs.shape
        cells = torch.nn.functional.adaptive_avg_pool2d(mean_abs[None], _fitted_grid(grid, h, w))[0]
        return cells.reshape(-1)
    if a.dim() == 3:
        c, t = mean_abs.shape
        return torch.nn.functional.adaptive_avg_pool1d(mean_abs[None], _time_bins(grid, t))[0].reshape(-1)
    return mean_abs.reshape(-1)


def importance_names(
    sample_shape: Sequence[int], grid: GridLike = (4, 4), feature_names: Optional[Sequence[str]] = None
) -> List[str]:
    """Names of the entries of :func:`feature_importance` for samples of ``sample_shape``.

    Tabular: ``feature_names`` (default ``f0, f1, ...``); images: ``ch<c>[<row>,<col>]`` per cell;
    sequences ``(C, T)``: ``ch<c>[t<start>:<end>]`` per channel and time bin (steps ``start..end-1``).

    Example:
        >>> importance_names((2,), feature_names=["age", "dose"])
        ['age', 'dose']
        >>> importance_names((1, 8, 8), grid=2)
        ['ch0[0,0]', 'ch0[0,1]', 'ch0[1,0]', 'ch0[1,1]']
        >>> importance_names((2, 10), grid=(1, 2))
        ['ch0[t0:5]', 'ch0[t5:10]', 'ch1[t0:5]', 'ch1[t5:10]']
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) == 3:
        c, h, w = shape
        gh, gw = _fitted_grid(grid, h, w)
        return [f"ch{k}[{i},{j}]" for k in range(c) for i in range(gh) for j in range(gw)]
    if len(shape) == 2:
        c, t = shape
        edges = _bin_edges(t, _time_bins(grid, t))
        return [f"ch{k}[t{a}:{b}]" for k in range(c) for a, b in edges]
    n = math.prod(shape)
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(names) != n:
            raise ValueError(f"{len(names)} feature names for {n} features")
        return names
    return [f"f{i}" for i in range(n)]


def token_vocabulary(ids: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """The distinct token ids of a probe (padding left out where ``valid`` is False), sorted: the
    features of :func:`token_bag`.

    Example:
        >>> import torch
        >>> token_vocabulary(torch.tensor([[5, 2, 0], [2, 7, 0]]), torch.tensor([[1, 1, 0], [1, 1, 0]]).bool())
        tensor([2, 5, 7])
    """
    ids = torch.as_tensor(ids)
    present = ids if valid is None else ids[torch.as_tensor(valid, dtype=torch.bool, device=ids.device)]
    return torch.unique(present.reshape(-1).cpu())


def token_bag(attributions: Tensor, ids: Tensor, vocabulary: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """Per-token maps ``(N, T)`` as ``(N, V)``: each sample's attribution summed over the positions that
    hold each token of ``vocabulary`` (padding left out where ``valid`` is False; a token a sample does
    not hold gets 0). Its :func:`feature_importance` is each token's importance over the probe.

    Example:
        >>> import torch
        >>> ids = torch.tensor([[5, 2, 5], [2, 7, 0]])
        >>> token_bag(torch.tensor([[1., 2., 3.], [4., 5., 6.]]), ids, torch.tensor([2, 5, 7]), ids != 0)
        tensor([[2., 4., 0.],
                [4., 0., 5.]])
    """
    a = torch.as_tensor(attributions)
    ids = torch.as_tensor(ids).to(a.device)
    if a.shape != ids.shape or a.dim() != 2:
        raise ValueError(f"token_bag needs maps and ids of the same shape (N, T), got {tuple(a.shape)} and {tuple(ids.shape)}")
    vocab = torch.as_tensor(vocabulary).to(a.device)
    slot = torch.searchsorted(vocab, ids).clamp(max=max(vocab.numel() - 1, 0))
    known = vocab.numel() > 0
    keep = (vocab[slot] == ids) if known else torch.zeros_like(ids, dtype=torch.bool)
    if valid is not None:
        keep = keep & torch.as_tensor(valid, dtype=torch.bool, device=a.device)
    bag = torch.zeros(a.shape[0], vocab.numel(), dtype=a.dtype, device=a.device)
    return bag.scatter_add_(1, slot, torch.where(keep, a, torch.zeros_like(a)))


# ----------------------------------------------------------------------------------------------
# all at once (what the callback logs)
# ----------------------------------------------------------------------------------------------
def check_metrics(metrics: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """Validate metric names (a name or a sequence of names) against :data:`DRIFT_METRICS`."""
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = tuple(metrics)
    if not metrics:
        raise ValueError(f"metrics is empty: name at least one of {', '.join(DRIFT_METRICS)}")
    unknown = [m for m in metrics if m not in DRIFT_METRICS]
    if unknown:
        raise ValueError(
            f"unknown drift metric(s) {', '.join(map(repr, unknown))}; the known ones are {', '.join(DRIFT_METRICS)}"
        )
    return tuple(dict.fromkeys(metrics))


def drift_scores(
    reference: Tensor,
    current: Tensor,
    reference_maps: Optional[Tensor] = None,
    current_maps: Optional[Tensor] = None,
    metrics: Sequence[str] = DRIFT_METRICS,
    top_k: int = 5,
) -> Dict[str, float]:
    """Every requested drift metric between a reference (or previous) epoch and the current one.

    ``reference``/``current`` are importance vectors (:func:`feature_importance`); the map metrics
    need ``reference_maps``/``current_maps`` (:func:`per_sample_maps`) and are left out without them.

    Example:
        >>> import torch
        >>> v = torch.tensor([0.4, 0.3, 0.2, 0.1])
        >>> drift_scores(v, v, metrics=["spearman", "js_divergence", "map_ssim"])
        {'spearman': 1.0, 'js_divergence': 0.0}
    """
    metrics = check_metrics(metrics)
    out: Dict[str, float] = {}
    for m in metrics:
        if m == "spearman" or m == "kendall":
            out[m] = rank_correlation(reference, current, m)
        elif m == "topk_overlap":
            out[m] = topk_overlap(reference, current, top_k)
        elif m == "ndcg":
            out[m] = ndcg(reference, current)
        elif m == "js_divergence":
            out[m] = js_divergence(reference, current)
        elif reference_maps is not None and current_maps is not None:
            fn = map_spearman if m == "map_spearman" else map_ssim
            out[m] = float(fn(reference_maps, current_maps).mean())
    return out
