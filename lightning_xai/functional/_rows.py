"""Which samples a method's model calls evaluate: row provenance for models with riding inputs.

:func:`sample_rows` sets it; the structured model of :mod:`~lightning_xai.functional.structured` reads
it to give each row its own sample's riding inputs (masks, token ids).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Union

from torch import Tensor

__all__ = ["sample_rows"]

#: the samples the model calls in progress evaluate: a slice or an index tensor into the method's inputs
_ROWS: ContextVar[Union[None, slice, Tensor]] = ContextVar("lightning_xai_sample_rows", default=None)


@contextmanager
def sample_rows(rows: Union[None, slice, Tensor]) -> Iterator[None]:
    """Declare which samples of its inputs a method's model calls inside the block evaluate: row ``j`` of
    the batch it passes is sample ``rows[j]`` (a slice or an index tensor). Models of several inputs use
    it to give each row its own riding inputs, so that the method runs batched (without it, one probe
    row at a time). The built-in methods declare every call; a user's method may, to run batched too.

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> def doubled_rows(model, x, target=None):  # evaluates every sample twice, in one batch
        ...     rows = torch.arange(x.shape[0]).repeat(2)
        ...     with F.sample_rows(rows):
        ...         out = model(x[rows])
        ...     return out.detach()[x.shape[0]:]  # the second copy: each row with its own mask
        >>> class Masked(torch.nn.Module):
        ...     def forward(self, x, mask):
        ...         return x * mask
        >>> F.attribute_structured(doubled_rows, Masked(), (torch.ones(2, 3), torch.tensor([[1, 0, 1], [0, 1, 1]])))[0]
        tensor([[1., 0., 1.],
                [0., 1., 1.]])
    """
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)
