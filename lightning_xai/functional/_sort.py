"""Sorting along the last dimension, on the fastest kernel at hand.

On a CPU, NumPy's sort (vectorised quicksort / introselect) is 5-20x faster than ``torch.sort`` on
the row lengths the summaries and rank statistics see (a few thousand values per map); elsewhere
``torch.sort`` is used. Sorted values are the same whichever kernel sorts them, and the rank
statistics built on the orders treat ties as groups, so results do not depend on the kernel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_NUMPY_DTYPES = (torch.float32, torch.float64)


def _on_numpy(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _NUMPY_DTYPES and not x.requires_grad


def sort_values(x: Tensor) -> Tensor:
    """``torch.sort(x, dim=-1).values`` (NaN last)."""
    if _on_numpy(x):
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return torch.sort(x, dim=-1).values


def argsort(x: Tensor) -> Tensor:
    """Indices that sort ``x`` along the last dimension (NaN last; the order within ties is unspecified)."""
    if _on_numpy(x):
        return torch.from_numpy(np.argsort(x.numpy(), axis=-1)).long()
    return torch.argsort(x, dim=-1)


def quantile(x: Tensor, q: float) -> float:
    """``torch.quantile(x, q)`` (linear interpolation) of a 1-D tensor of finite values."""
    if _on_numpy(x):
        return float(np.quantile(x.numpy(), q))
    return float(torch.quantile(x, q))
