"""Scalar summaries of attribution maps (one value per map, averaged by the callbacks).

All of them work on ``|attribution|`` per sample and give defined values on degenerate maps: an
all-zero map is treated as uniform (no feature stands out), so it has Gini 0, entropy 1 and a top-10%
share of 0.1. NaN in a map gives NaN, so that a check can see it.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._sort import sort_values
from .drift import in_row_chunks

__all__ = ["gini", "entropy", "top_mass", "summarize", "global_importance", "top_tokens"]


def _flat_abs(attr: Tensor) -> Tensor:
    if attr.dim() < 2:
        raise ValueError(f"expected attributions of shape (N, ...), got {tuple(attr.shape)}")
    return attr.detach().reshape(attr.shape[0], -1).abs().double()


def gini(attr: Tensor) -> Tensor:
    """Gini index of ``|attr|`` per sample, in [0, 1]: 0 for a uniform map, near 1 for a single feature.

    Example:
        >>> import torch
        >>> gini(torch.tensor([[1., 1., 1., 1.], [0., 0., 0., 4.]]))
        tensor([0.0000, 0.7500], dtype=torch.float64)
    """
    return _gini_of_sorted(sort_values(_flat_abs(attr)))


def _gini_of_sorted(s: Tensor) -> Tensor:
    n = s.shape[1]
    total = s.sum(1)
    k = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    g = ((2 * k - n - 1) * s).sum(1) / (n * total)
    return torch.where(total == 0, torch.zeros_like(g), g)


def entropy(attr: Tensor) -> Tensor:
    """Shannon entropy of the normalised ``|attr|`` per sample, divided by ``log(n)``: in [0, 1].

    Example:
        >>> import torch
        >>> entropy(torch.tensor([[1., 1., 1., 1.], [0., 0., 0., 4.]]))
        tensor([1., 0.], dtype=torch.float64)
    """
    return _entropy_of_flat(_flat_abs(attr))


def _entropy_of_flat(a: Tensor) -> Tensor:
    n = a.shape[1]
    total = a.sum(1, keepdim=True)
    p = torch.where(total == 0, torch.full_like(a, 1.0 / n), a / total)
    h = -torch.special.xlogy(p, p).sum(1)  # 0 log 0 = 0
    return (h / math.log(n)).clamp(0.0, 1.0) + 0.0 if n > 1 else torch.zeros_like(h)


def top_mass(attr: Tensor, fraction: float = 0.1) -> Tensor:
    """Share of ``|attr|`` held by the top ``fraction`` of features, per sample.

    Example:
        >>> import torch
        >>> top_mass(torch.tensor([[9.] + [1.] * 9]), 0.1)
        tensor([0.5000], dtype=torch.float64)
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return _top_mass_of_sorted(sort_values(_flat_abs(attr)), fraction)


def _top_mass_of_sorted(s: Tensor, fraction: float) -> Tensor:
    n = s.shape[1]
    k = max(1, int(round(fraction * n)))
    total = s.sum(1)
    return torch.where(total == 0, torch.full_like(total, k / n), s[:, n - k :].sum(1) / total)


def summarize(attr: Tensor, valid: Optional[Tensor] = None) -> Dict[str, float]:
    """Mean over samples of :func:`gini`, :func:`entropy` and :func:`top_mass` (``top10_mass``).

    One sort per map serves the Gini index and the top-10% share. ``valid`` (shaped like ``attr``,
    bool) leaves positions out of each sample's summaries: the padding of token sequences.

    Example:
        >>> import torch
        >>> summarize(torch.tensor([[9.] + [1.] * 9]))["top10_mass"]
        0.5
        >>> summarize(torch.tensor([[9.] + [1.] * 9 + [0.] * 5]), valid=torch.arange(15) < 10)["top10_mass"]
        0.5
    """
    if valid is not None:
        valid = torch.broadcast_to(valid.to(attr.device).bool(), attr.shape).reshape(attr.shape[0], -1)
        rows = attr.reshape(attr.shape[0], -1)
        per_row = [summarize(rows[i][valid[i]][None]) for i in range(rows.shape[0]) if bool(valid[i].any())]
        if not per_row:
            return {"gini": float("nan"), "entropy": float("nan"), "top10_mass": float("nan")}
        return {k: sum(r[k] for r in per_row) / len(per_row) for k in per_row[0]}
    def per_sample(rows: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        a = _flat_abs(rows)
        s = sort_values(a)
        return _gini_of_sorted(s), _entropy_of_flat(a), _top_mass_of_sorted(s, 0.1)

    # ROWS_PER_CHUNK samples at a time: the sorted copies stay bounded whatever the probe size
    g, h, t = in_row_chunks(per_sample, attr)
    return {"gini": float(g.mean()), "entropy": float(h.mean()), "top10_mass": float(t.mean())}


def global_importance(attr: Tensor) -> Tensor:
    """Mean ``|attr|`` over the samples: one value per feature (the shape of one sample).

    Example:
        >>> import torch
        >>> global_importance(torch.tensor([[1., -2.], [3., 0.]]))
        tensor([2., 1.])
    """
    return attr.detach().abs().mean(0)


def top_tokens(
    values: Tensor, tokens: Sequence[Sequence[str]], valid: Optional[Tensor] = None, k: int = 5
) -> List[List[Tuple[str, float]]]:
    """Each sample's ``k`` tokens of largest ``|attribution|``, as ``(token, signed value)``, largest first.

    Args:
        values: ``(N, T)`` per-token maps.
        tokens: each sample's ``T`` tokens as text (``ProbeSet.tokens(i)``).
        valid: ``(N, T)`` True where a token counts (padding left out), or None.

    Example:
        >>> import torch
        >>> top_tokens(torch.tensor([[0.25, -1.5, 0.5, 2.0]]), [["a", "b", "c", "<pad>"]],
        ...            torch.tensor([[True, True, True, False]]), k=2)
        [[('b', -1.5), ('c', 0.5)]]
    """
    v = values.detach().double().cpu()
    if v.dim() != 2 or len(tokens) < v.shape[0]:
        raise ValueError(f"top_tokens needs (N, T) maps and N rows of tokens, got {tuple(v.shape)} and {len(tokens)} rows")
    keep = torch.ones_like(v, dtype=torch.bool) if valid is None else valid.detach().cpu().bool()
    out: List[List[Tuple[str, float]]] = []
    for i in range(v.shape[0]):
        idx = [int(j) for j in torch.nonzero(keep[i]).flatten()]
        idx.sort(key=lambda j: -abs(float(v[i, j])))
        out.append([(str(tokens[i][j]), float(v[i, j])) for j in idx[:k]])
    return out
