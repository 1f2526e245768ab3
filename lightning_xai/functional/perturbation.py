"""SHAP, LIME and friends at training time: perturbation methods over interpretable features, batched.

Every method here explains each probe row through **interpretable features**: groups of input
elements that are kept or replaced by a baseline together. :func:`feature_mask` builds them:

- images ``(N, C, H, W)``: a ``grid`` of rows x columns superpixels over the image, all channels
  of a cell together (default ``(4, 4)``: 16 features);
- tabular ``(N, F)``: one feature per column;
- any other shape: one feature per element of a sample;
- or a ``feature_mask`` you give: integer ids ``0..F-1``, one sample's shape (shared) or one per row.

The methods (each in the method table, :mod:`lightning_xai.functional.methods`):

================== ===================================================== ===============================
name               what                                                  forwards per probe row
================== ===================================================== ===============================
kernel_shap        Kernel SHAP (Lundberg & Lee 2017): exact Shapley      ``n_samples`` (``2**F`` when
                   values when ``n_samples >= 2**F`` (every coalition     exact)
                   enumerated), else a paired sample of the Shapley
                   kernel; the efficiency constraint is exact
lime               LIME (Ribeiro et al. 2016): a weighted ridge           ``n_samples``
                   regression on random coalitions
shapley_sampling   permutation sampling of Shapley values (Strumbelj &    ``n_samples * (F - 1) + 2``
                   Kononenko 2010); attributions sum to f(x) - f(b)
gradient_shap      expected gradients (Erion et al. 2021; Captum's        ``n_samples`` forward+backward
                   ``GradientShap``)
feature_ablation   f(x) - f(x with one feature set to the baseline)       ``F + 1``
================== ===================================================== ===============================

Batching: all coalitions of all probe rows form one ``(coalitions x rows)`` batch that goes
through the model ``chunk_size`` rows at a time (the engine halves it after an out-of-memory
error); the perturbed rows are built chunk by chunk, so memory holds one chunk. Results are shaped
like the inputs: every element of a feature carries the feature's value (as Captum returns them).

Randomness comes from a private ``torch.Generator`` seeded with ``seed`` (default 0): the same
coalitions every epoch, so that epochs are comparable, and the global RNG is never touched.
Coalitions and regression weights depend only on the number of features, not on the rows, so a
probe sharded over DDP ranks gets the same maps as unsharded.

Example:
    >>> import torch
    >>> from lightning_xai import functional as F
    >>> net = torch.nn.Linear(3, 1)
    >>> x = torch.randn(2, 3)
    >>> phi = F.kernel_shap(net, x, n_samples=8)          # 8 >= 2**3: exact Shapley values
    >>> torch.allclose(phi, net.weight * x, atol=1e-5)    # a linear model's are w * (x - 0)
    True
    >>> feature_mask(torch.zeros(1, 3, 8, 8), grid=2)[0, 0]
    tensor([[0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [2, 2, 2, 2, 3, 3, 3, 3],
            [2, 2, 2, 2, 3, 3, 3, 3],
            [2, 2, 2, 2, 3, 3, 3, 3],
            [2, 2, 2, 2, 3, 3, 3, 3]])
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._guard import explaining
from ._rows import sample_rows
from .drift import GridLike, check_grid
from .attribution import (
    TargetLike,
    _autograd_ready,
    _check_inputs,
    _chunk_size,
    _chunks,
    _gradient_pass,
    _note,
    _resolve_predicted,
    _target_index,
    baseline_like,
    select_output,
)

__all__ = [
    "PERTURBATION_METHODS",
    "feature_mask",
    "input_kind",
    "count_features",
    "kernel_shap",
    "lime",
    "shapley_sampling",
    "gradient_shap",
    "feature_ablation",
    "shapley_kernel_weights",
    "lime_weights",
]

#: The methods of this module, by the name the method table gives them.
PERTURBATION_METHODS: Tuple[str, ...] = ("kernel_shap", "lime", "shapley_sampling", "gradient_shap", "feature_ablation")

#: ``(rows, columns)`` of the default superpixel grid over images
DEFAULT_GRID: Tuple[int, int] = (4, 4)

#: above this many features, ``kernel_shap`` never enumerates (2**F coalitions would not fit anyway)
MAX_EXACT_FEATURES = 20

MaskLike = Optional[Tensor]


# ----------------------------------------------------------------------------------------------
# interpretable features
# ----------------------------------------------------------------------------------------------
def input_kind(inputs: Tensor) -> str:
    """What kind of input a batch is, for its default features: ``"image"`` ``(N, C, H, W)``,
    ``"tabular"`` ``(N, F)`` or ``"elements"`` (anything else: one feature per element)."""
    if inputs.dim() == 4:
        return "image"
    if inputs.dim() == 2:
        return "tabular"
    return "elements"


def _image_mask(shape: Tuple[int, ...], grid: Optional[GridLike]) -> Tensor:
    c, h, w = shape
    gh, gw = check_grid(DEFAULT_GRID if grid is None else grid)
    gh, gw = min(gh, h), min(gw, w)  # a grid finer than the image is clipped to it, as feature_importance does
    # cell i covers rows floor(i*H/gh) .. floor((i+1)*H/gh) - 1: the cells of adaptive average pooling
    # when the grid divides the image (what FeatureDriftMonitor's grid draws)
    rows = torch.arange(h) * gh // h
    cols = torch.arange(w) * gw // w
    cells = rows[:, None] * gw + cols[None, :]
    return cells.expand(c, h, w).contiguous()


def _no_grid(kind: str) -> Callable[[Tuple[int, ...], Optional[GridLike]], Tensor]:
    def build(shape: Tuple[int, ...], grid: Optional[GridLike]) -> Tensor:
        if grid is not None:
            raise ValueError(
                f"grid= groups the pixels of images (N, C, H, W); these {kind} inputs of per-sample shape "
                f"{shape} have one feature per element: drop grid, or pass feature_mask=<integer ids>"
            )
        return torch.arange(math.prod(shape)).reshape(shape)

    return build


#: The default interpretable features per kind of input: ``builder(sample_shape, grid) -> mask``. A new
#: kind (tokens, bins of a sequence) is one more entry here and one more case in :func:`input_kind`.
_MASK_BUILDERS: Dict[str, Callable[[Tuple[int, ...], Optional[GridLike]], Tensor]] = {
    "image": _image_mask,
    "tabular": _no_grid("tabular"),
    "elements": _no_grid("non-image"),
}


def feature_mask(inputs: Tensor, grid: Optional[GridLike] = None, mask: MaskLike = None) -> Tensor:
    """The interpretable features of ``inputs`` as an integer mask of shape ``(1 or N, *sample_shape)``.

    Without ``mask``: the default features of the input's kind (:func:`input_kind`): a ``grid`` of
    superpixels over images (default ``(4, 4)``; an int for a square grid), one feature per column
    of tabular inputs, one per element otherwise. With ``mask``: that mask, checked (integer ids
    ``0..F-1``; one sample's shape, ``(1, ...)`` or ``(N, ...)``, or anything that broadcasts to a
    sample, such as ``(1, H, W)`` for images).

    Example:
        >>> import torch
        >>> feature_mask(torch.zeros(4, 3))
        tensor([[0, 1, 2]])
        >>> feature_mask(torch.zeros(2, 1, 4, 4), grid=(1, 2)).shape
        torch.Size([1, 1, 4, 4])
    """
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise ValueError("feature_mask needs inputs of shape (N, ...)")
    n, shape = inputs.shape[0], tuple(inputs.shape[1:])
    if mask is None:
        return _MASK_BUILDERS[input_kind(inputs)](shape, grid).unsqueeze(0).to(inputs.device)
    if grid is not None:
        raise ValueError("pass either grid= (superpixels) or feature_mask= (your own features), not both")
    m = torch.as_tensor(mask)
    if m.is_floating_point() or m.dtype == torch.bool:
        raise TypeError(f"feature_mask must hold integer feature ids 0..F-1, got dtype {m.dtype}")
    m = m.long().to(inputs.device)
    if m.dim() == len(shape) + 1 and m.shape[0] in (1, n):
        lead = m.shape[0]
        body = m
    else:
        lead, body = 1, m.unsqueeze(0)
    try:
        body = torch.broadcast_to(body, (lead,) + shape)
    except RuntimeError:
        raise ValueError(
            f"feature_mask of shape {tuple(m.shape)} does not fit inputs of shape {tuple(inputs.shape)}: give one "
            f"sample's shape {shape} (or one that broadcasts to it), or one mask per row ({n}, *{shape})"
        ) from None
    if body.numel() and int(body.min()) < 0:
        raise ValueError(f"feature_mask ids must be >= 0 (0..F-1), got {int(body.min())}")
    return body.contiguous()


def count_features(mask: Tensor) -> int:
    """How many interpretable features a mask defines (its largest id + 1)."""
    return int(mask.max()) + 1 if mask.numel() else 0


def _spread(values: Tensor, mask: Tensor, inputs: Tensor) -> Tensor:
    """Per-feature values ``(N, F)`` spread over the inputs' elements: each element gets its feature's value."""
    n = inputs.shape[0]
    flat = mask.reshape(mask.shape[0], -1).expand(n, -1)
    return values.gather(1, flat).reshape(inputs.shape).to(inputs.dtype)


# ----------------------------------------------------------------------------------------------
# the batched evaluation of coalitions
# ----------------------------------------------------------------------------------------------
def _coalition_outputs(
    model: nn.Module, x: Tensor, target: Optional[Tensor], mask: Tensor, coalitions: Tensor, base: Tensor, chunk: int,
) -> Tensor:
    """``f_t`` of every probe row under every coalition: ``(S, N)``.

    Row ``r = k * N + i`` of the ``(S x N)`` perturbed batch is row ``i`` with the features of
    coalition ``k`` kept and the others replaced by the baseline; the batch is built and run
    ``chunk`` rows at a time (no_grad).
    """
    n = x.shape[0]
    s_count = coalitions.shape[0]
    shape = tuple(x.shape[1:])
    flat = mask.reshape(mask.shape[0], -1)
    shared = flat.shape[0] == 1
    coal = coalitions.to(device=x.device, dtype=torch.bool)
    out = torch.empty(s_count * n, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for s, e in _chunks(s_count * n, chunk):
            if s // n == (e - 1) // n:  # one coalition: a broadcast mask and slices
                c, a, b = s // n, s % n, (e - 1) % n + 1
                keep = coal[c].index_select(0, flat[0]) if shared else coal[c][flat[a:b]]
                keep = keep.view((-1,) + shape)
                rows = torch.where(keep, x[a:b], base[a:b])
                t = None if target is None else target[a:b]
                samples: Union[slice, Tensor] = slice(a, b)
            else:
                idx = torch.arange(s, e, device=x.device)
                k, i = idx // n, idx % n
                ck = coal.index_select(0, k)
                keep = ck.index_select(1, flat[0]) if shared else ck.gather(1, flat.index_select(0, i))
                rows = torch.where(keep.view((-1,) + shape), x.index_select(0, i), base.index_select(0, i))
                t = None if target is None else target.index_select(0, i)
                samples = i
            with sample_rows(samples):
                out[s:e] = select_output(model(rows), t, target if s == 0 else None).double()
            _note("forward", e - s)
    return out.view(s_count, n)


def _prepare(
    model: nn.Module, inputs: Tensor, target: TargetLike, grid: Optional[GridLike], mask: MaskLike,
    baseline: Union[None, float, Tensor], chunk_size: Optional[int],
) -> Tuple[Tensor, Optional[Tensor], Tensor, int, Tensor, int]:
    """Inputs ready for autograd, the resolved target, the feature mask, F, the baseline, the chunk."""
    _check_inputs(inputs)
    n = inputs.shape[0]
    chunk = _chunk_size(chunk_size, n)
    x = _autograd_ready(inputs)
    fmask = feature_mask(x, grid, mask)
    features = count_features(fmask)
    if features < 1:
        raise ValueError("the feature mask defines no feature")
    base = baseline_like(baseline, x)
    t = _resolve_predicted(model, x, _target_index(target, n, x.device), chunk)
    return x, t, fmask, features, base, chunk


def _check_n(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _generator(seed: int, generator: Optional[torch.Generator]) -> torch.Generator:
    if generator is not None:
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device


def _given_coalitions(coalitions: Tensor, features: int) -> Tensor:
    z = torch.as_tensor(coalitions)
    if z.dim() != 2 or z.shape[1] != features:
        raise ValueError(
            f"coalitions must be a (samples, {features}) 0/1 tensor, one column per feature; got shape {tuple(z.shape)}"
        )
    if not bool(((z == 0) | (z == 1)).all()):
        raise ValueError("coalitions must hold 0 (feature replaced by the baseline) or 1 (feature kept)")
    return z.to(torch.bool).cpu()


# ----------------------------------------------------------------------------------------------
# Kernel SHAP
# ----------------------------------------------------------------------------------------------
def shapley_kernel_weights(sizes: Tensor, features: int) -> Tensor:
    """The Shapley kernel ``(F - 1) / (C(F, k) k (F - k))`` of coalitions of ``sizes`` (inf at 0 and F).

    Example:
        >>> shapley_kernel_weights(torch.tensor([1, 2, 3]), 4)
        tensor([0.2500, 0.1250, 0.2500], dtype=torch.float64)
    """
    k = sizes.double()
    m = float(features)
    log_binom = torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(k + 1.0) - torch.lgamma(m - k + 1.0)
    with torch.no_grad():
        w = (m - 1.0) / (torch.exp(log_binom) * k * (m - k))
    return torch.where((k == 0) | (k == m), torch.full_like(w, float("inf")), w)


def _all_coalitions(features: int) -> Tensor:
    bits = torch.arange(2**features).unsqueeze(1) >> torch.arange(features).unsqueeze(0)
    return (bits & 1).to(torch.bool)


def _kernel_samples(features: int, n_samples: int, generator: torch.Generator) -> Tensor:
    """``n_samples`` coalitions: all features, none, then complementary pairs ``(z, 1 - z)`` whose size
    ``k`` is drawn with probability proportional to ``(F - 1) / (k (F - k))`` and whose members are a
    uniform subset of that size (so that ``z`` is drawn from the Shapley kernel)."""
    out = [torch.ones(1, features, dtype=torch.bool), torch.zeros(1, features, dtype=torch.bool)]
    pairs = (n_samples - 2 + 1) // 2
    if pairs > 0 and features > 1:
        k = torch.arange(1, features, dtype=torch.float64)
        p = (features - 1) / (k * (features - k))
        sizes = torch.multinomial(p / p.sum(), pairs, replacement=True, generator=generator) + 1
        order = torch.rand(pairs, features, generator=generator).argsort(1)
        z = order < sizes.unsqueeze(1)  # the first `size` features of a random order: a uniform subset
        both = torch.stack([z, ~z], 1).reshape(-1, features)
        out.append(both[: n_samples - 2])
    return torch.cat(out)[:n_samples]


def _efficient_regression(z: Tensor, y: Tensor, weights: Tensor, f0: Tensor, f1: Tensor) -> Tensor:
    """Kernel SHAP's regression: ``min sum_j w_j (y_j - f0 - z_j . phi)^2`` subject to
    ``sum(phi) = f1 - f0``, for each probe row (``y``: ``(S, N)``); float64 on the CPU.

    The constraint is kept exactly: ``phi = (f1 - f0) / F + Q u`` with ``Q`` an orthonormal basis of the
    sums-to-zero subspace, and ``u`` the minimum-norm weighted least-squares solution (symmetric in
    the features when the samples do not determine them all)."""
    features = z.shape[1]
    total = (f1 - f0)  # (N,)
    if features == 1:
        return total.unsqueeze(1)
    size = z.sum(1)
    inner = (size > 0) & (size < features)  # the two end points are the constraint, not samples
    z, y, w = z[inner].double(), y[inner], weights[inner].double()
    base = total.unsqueeze(1) / features  # (N, 1)
    centred = torch.eye(features, dtype=torch.float64) - 1.0 / features
    q = torch.linalg.qr(centred)[0][:, : features - 1]  # (F, F-1), orthonormal, columns sum to 0
    if z.shape[0] == 0:
        return base.expand(-1, features).clone()
    rhs = y - f0.unsqueeze(0) - z.sum(1, keepdim=True) * base.T  # (S, N)
    sw = w.sqrt().unsqueeze(1)
    u = torch.linalg.lstsq(sw * (z @ q), sw * rhs, driver="gelsd").solution  # (F-1, N)
    return base + (q @ u).T


def kernel_shap(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 200,
    grid: Optional[GridLike] = None,
    feature_mask: MaskLike = None,
    baseline: Union[None, float, Tensor] = None,
    seed: int = 0,
    coalitions: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Kernel SHAP over interpretable features (see the module docstring), one value per feature.

    With ``F`` features and ``n_samples >= 2**F`` every coalition is evaluated and the answer is the
    exact Shapley value of each feature for the game ``v(S) = f_t(x_S, baseline_rest)``. Below that,
    ``n_samples`` coalitions are evaluated: all features, none, and complementary pairs drawn from the
    Shapley kernel, and the weighted regression is solved with the efficiency constraint
    ``sum(phi) = f_t(x) - f_t(baseline)`` kept exactly (Captum's ``KernelShap`` weighs the two end
    points by 1e6 instead).

    Args:
        n_samples: coalitions evaluated per row (forward rows: ``n_samples * N``; ``2**F`` when exact).
        grid: superpixel grid over images (default ``(4, 4)``).
        feature_mask: your own features (integer ids), instead of ``grid``.
        baseline: the value a left-out feature takes: a scalar (default 0) or a tensor that broadcasts.
        seed: seed of the private generator that draws the coalitions (same coalitions every call).
        coalitions: ``(S, F)`` 0/1 coalitions to evaluate instead of drawing them (treated as draws
            from the Shapley kernel: each weighs 1; rows with all or no features are the constraint).
        chunk_size: rows per forward pass (default: ``N``).
    """
    _check_n("n_samples", n_samples, 2)
    with explaining(model):
        x, t, fmask, features, base, chunk = _prepare(model, inputs, target, grid, feature_mask, baseline, chunk_size)
        ends = torch.stack([torch.ones(features, dtype=torch.bool), torch.zeros(features, dtype=torch.bool)])
        if coalitions is not None:
            z = _given_coalitions(coalitions, features)
            sizes = z.sum(1)
            z = torch.cat([ends, z[(sizes > 0) & (sizes < features)]])
            weights = torch.ones(z.shape[0], dtype=torch.float64)
        elif features <= MAX_EXACT_FEATURES and n_samples >= 2**features:
            z = _all_coalitions(features)
            weights = shapley_kernel_weights(z.sum(1), features)
        else:
            z = _kernel_samples(features, n_samples, _generator(seed, generator))
            weights = torch.ones(z.shape[0], dtype=torch.float64)
        y = _coalition_outputs(model, x, t, fmask, z, base, chunk)
        size = z.sum(1)
        f1 = y[(size == features).nonzero()[0, 0]].cpu()
        f0 = y[(size == 0).nonzero()[0, 0]].cpu()
        phi = _efficient_regression(z, y.cpu(), weights, f0, f1)
        return _spread(phi.to(x.device), fmask, x)


# ----------------------------------------------------------------------------------------------
# LIME
# ----------------------------------------------------------------------------------------------
def lime_weights(z: Tensor, kernel_width: float) -> Tensor:
    """LIME's similarity of each coalition to the explained input: ``exp(-d^2 / width^2)`` with ``d`` the
    cosine distance between the coalition and all-ones (``1 - sqrt(k / F)``; 1 for the empty one).

    Example:
        >>> lime_weights(torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]), 0.25).round(decimals=4)
        tensor([1.0000, 0.0183], dtype=torch.float64)
    """
    k = z.double().sum(1)
    d = 1.0 - torch.sqrt(k / z.shape[1])
    return torch.exp(-(d**2) / kernel_width**2)


def _ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float) -> Tensor:
    """Weighted ridge regression with an unpenalised intercept (scikit-learn's ``Ridge`` with sample
    weights): the coefficients ``(N, F)`` for each column of ``y`` ``(S, N)``; float64 on the CPU."""
    z, w = z.double(), w.double()
    mean_z = (w.unsqueeze(1) * z).sum(0) / w.sum()
    mean_y = (w.unsqueeze(1) * y).sum(0) / w.sum()
    zc, yc = z - mean_z, y - mean_y
    sw = w.sqrt().unsqueeze(1)
    if alpha > 0:
        a = (sw * zc).T @ (sw * zc) + alpha * torch.eye(z.shape[1], dtype=torch.float64)
        return torch.linalg.solve(a, (sw * zc).T @ (sw * yc)).T
    return torch.linalg.lstsq(sw * zc, sw * yc, driver="gelsd").solution.T


def lime(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 200,
    grid: Optional[GridLike] = None,
    feature_mask: MaskLike = None,
    baseline: Union[None, float, Tensor] = None,
    kernel_width: float = 0.25,
    alpha: float = 1.0,
    seed: int = 0,
    coalitions: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """LIME over interpretable features: the coefficients of a local linear surrogate.

    ``n_samples`` coalitions keep each feature with probability 1/2 (Captum's default sampling); the
    model's outputs on them are fitted by a ridge regression (``alpha``, intercept not penalised)
    weighted by :func:`lime_weights` (``kernel_width`` on the cosine distance in the space of
    coalitions, the ``lime`` package's choice for images). Equal to Captum's ``Lime`` with a
    ``SkLearnRidge(alpha)`` surrogate and the same similarity, fed the same coalitions.

    Args:
        n_samples: coalitions per row (forward rows: ``n_samples * N``).
        grid, feature_mask, baseline, seed, coalitions, chunk_size: as :func:`kernel_shap`.
        kernel_width: width of the exponential kernel.
        alpha: ridge penalty (0: least squares, minimum-norm when underdetermined).
    """
    _check_n("n_samples", n_samples, 1)
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0, got {kernel_width!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    with explaining(model):
        x, t, fmask, features, base, chunk = _prepare(model, inputs, target, grid, feature_mask, baseline, chunk_size)
        if coalitions is not None:
            z = _given_coalitions(coalitions, features)
        else:
            z = torch.rand(n_samples, features, generator=_generator(seed, generator)) < 0.5
        y = _coalition_outputs(model, x, t, fmask, z, base, chunk)
        coef = _ridge(z, y.cpu(), lime_weights(z, float(kernel_width)), float(alpha))
        return _spread(coef.to(x.device), fmask, x)


# ----------------------------------------------------------------------------------------------
# Shapley value sampling
# ----------------------------------------------------------------------------------------------
def shapley_sampling(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    n_samples: int = 8,
    grid: Optional[GridLike] = None,
    feature_mask: MaskLike = None,
    baseline: Union[None, float, Tensor] = None,
    seed: int = 0,
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Shapley values by permutation sampling, as Captum's ``ShapleyValueSampling``.

    ``n_samples`` random orders of the features (``torch.randperm`` from the private generator); along
    each, the features are switched from the baseline to the input one by one and each is credited
    with the change of ``f_t``. The mean over the orders is unbiased, and every order's credits sum
    to ``f_t(x) - f_t(baseline)``, so the attributions do too (efficiency). Forward rows:
    ``(n_samples * (F - 1) + 2) * N`` (the empty and full coalitions once).
    """
    _check_n("n_samples", n_samples, 1)
    with explaining(model):
        x, t, fmask, features, base, chunk = _prepare(model, inputs, target, grid, feature_mask, baseline, chunk_size)
        g = _generator(seed, generator)
        perms = torch.stack([torch.randperm(features, generator=g) for _ in range(n_samples)])  # (S, F)
        rank = perms.argsort(1)  # rank[p, f]: where feature f comes in order p
        steps = torch.arange(features - 1)
        partial = rank.unsqueeze(1) <= steps.view(1, -1, 1)  # (S, F-1, F): the first j+1 features of p
        z = torch.cat([torch.zeros(1, features, dtype=torch.bool), torch.ones(1, features, dtype=torch.bool),
                       partial.reshape(-1, features)])
        y = _coalition_outputs(model, x, t, fmask, z, base, chunk)  # (2 + S*(F-1), N)
        n = x.shape[0]
        path = torch.cat([y[0].expand(n_samples, 1, n), y[2:].view(n_samples, features - 1, n),
                          y[1].expand(n_samples, 1, n)], 1)  # (S, F+1, N): f along each order
        gains = path[:, 1:] - path[:, :-1]  # (S, F, N): the gain of the j-th feature of order p
        phi = torch.zeros(n, features, dtype=torch.float64, device=y.device)
        phi.index_add_(1, perms.reshape(-1).to(y.device), gains.permute(2, 0, 1).reshape(n, -1))
        return _spread(phi / n_samples, fmask, x)


# ----------------------------------------------------------------------------------------------
# feature ablation
# ----------------------------------------------------------------------------------------------
def feature_ablation(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    grid: Optional[GridLike] = None,
    feature_mask: MaskLike = None,
    baseline: Union[None, float, Tensor] = None,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Feature ablation, as Captum's ``FeatureAblation``: ``f_t(x) - f_t(x with the feature at the
    baseline)`` for each feature. Forward rows: ``(F + 1) * N``."""
    with explaining(model):
        x, t, fmask, features, base, chunk = _prepare(model, inputs, target, grid, feature_mask, baseline, chunk_size)
        z = torch.cat([torch.ones(1, features, dtype=torch.bool), ~torch.eye(features, dtype=torch.bool)])
        y = _coalition_outputs(model, x, t, fmask, z, base, chunk)
        return _spread((y[0:1] - y[1:]).T.contiguous(), fmask, x)


# ----------------------------------------------------------------------------------------------
# GradientSHAP (expected gradients)
# ----------------------------------------------------------------------------------------------
def _baselines(baselines: Union[None, float, Tensor], x: Tensor) -> Tensor:
    """A set of ``B`` reference rows ``(B, *sample_shape)``."""
    shape = tuple(x.shape[1:])
    if baselines is None or isinstance(baselines, (int, float)):
        value = 0.0 if baselines is None else float(baselines)
        return torch.full((1,) + shape, value, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(baselines, dtype=x.dtype, device=x.device).detach()
    if tuple(b.shape) == shape:
        return b.unsqueeze(0)
    if b.dim() == len(shape) + 1 and tuple(b.shape[1:]) == shape and b.shape[0] >= 1:
        return b
    raise ValueError(
        f"baselines of shape {tuple(b.shape)} do not fit inputs of per-sample shape {shape}: pass a scalar, one "
        f"sample {shape} or a set of reference samples (B, *{shape})"
    )


def _gradient_shap_draws(
    rows: int, sample_shape: Tuple[int, ...], references: int, noise: float, seed: int,
    generator: Optional[torch.Generator], dtype: torch.dtype,
) -> Tuple[Optional[Tensor], Tensor, Tensor]:
    """The random numbers of :func:`gradient_shap` for ``rows = N * n_samples`` noisy rows (row
    ``i * n_samples + s``: sample ``s`` of input ``i``, Captum's layout), in this order from one
    generator: the noise (``rows x sample`` standard normals times ``noise``; none when 0), the
    reference of each row, its point on the path (uniform in [0, 1), drawn in float64)."""
    g = _generator(seed, generator)
    eps = None
    if noise > 0:
        eps = torch.empty((rows,) + sample_shape, dtype=dtype).normal_(0.0, 1.0, generator=g).mul_(noise)
    index = torch.randint(references, (rows,), generator=g)
    alpha = torch.rand(rows, dtype=torch.float64, generator=g).to(dtype)
    return eps, index, alpha


def gradient_shap(
    model: nn.Module,
    inputs: Tensor,
    target: TargetLike = None,
    *,
    baselines: Union[None, float, Tensor] = None,
    n_samples: int = 16,
    noise: float = 0.0,
    seed: int = 0,
    chunk_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    shard: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """GradientSHAP / expected gradients, as Captum's ``GradientShap``.

    For each input, ``n_samples`` times: add Gaussian noise (``noise``: standard deviation in input
    units, Captum's ``stdevs``, default 0), pick a reference row from ``baselines`` at random, a point
    ``alpha ~ U[0, 1)`` on the straight path, and take ``(x' - b) * grad f_t(b + alpha (x' - b))``;
    the attribution is the mean. Its expectation over references and alphas is the integrated
    gradients from the references, which approximate SHAP values.

    Args:
        baselines: the reference distribution: a scalar (default 0), one sample, or ``(B, ...)`` reference
            rows (e.g. a few training samples), picked uniformly.
        n_samples: noisy rows per input (forward+backward rows: ``n_samples * N``).
        seed: seed of the private generator (same draws every call).
        shard: ``(start, total)``: ``inputs`` are rows ``start..`` of a ``total``-row probe; the draws
            are those of the whole probe, so sharded maps equal unsharded ones.
    """
    _check_inputs(inputs)
    _check_n("n_samples", n_samples, 1)
    if not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    n = inputs.shape[0]
    chunk = _chunk_size(chunk_size, n)
    first, total_rows = (0, n) if shard is None else (int(shard[0]), int(shard[1]))
    if first < 0 or first + n > total_rows:
        raise ValueError(f"shard={shard} does not hold {n} rows")
    with explaining(model):
        x = _autograd_ready(inputs)
        refs = _baselines(baselines, x)
        shape = tuple(x.shape[1:])
        eps, index, alpha = _gradient_shap_draws(
            total_rows * n_samples, shape, refs.shape[0], float(noise), seed, generator, x.dtype
        )
        rows = slice(first * n_samples, (first + n) * n_samples)
        index, alpha = index[rows].to(x.device), alpha[rows].to(x.device)
        eps = None if eps is None else eps[rows].to(x.device)
        t = _resolve_predicted(model, x, _target_index(target, n, x.device), chunk)
        total = torch.zeros_like(x)
        view = (-1,) + (1,) * len(shape)
        for s, e in _chunks(n * n_samples, chunk):
            i = torch.arange(s, e, device=x.device) // n_samples
            noisy = x.index_select(0, i)
            if eps is not None:
                noisy = noisy + eps[s:e]
            b = refs.index_select(0, index[s:e])
            a = alpha[s:e].view(view)
            point = a * noisy + (1.0 - a) * b  # Captum's form of b + a (x' - b)
            gx, _, _ = _gradient_pass(
                model, point, None if t is None else t.index_select(0, i), validate=t if s == 0 else None, copy=False,
                rows=i,
            )
            assert gx is not None
            total.index_add_(0, i, gx.mul_(noisy - b))
            del gx, point, noisy
        return total / n_samples
