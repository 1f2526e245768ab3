"""Which samples a method's model calls evaluate: row provenance for models with riding inputs.

:func:`sample_rows` sets it; the structured model of :mod:`~lightning_xai.functional.structured` reads
it to give each row its own sample's riding inputs (masks, token ids).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Optional, Tuple, Union

from torch import Tensor

__all__ = ["sample_rows", "declared_rows", "handing", "entering", "entered"]

#: what identifies a tensor's rows: its storage, shape, strides, dtype and device (``detach`` keeps them)
Identity = Tuple[Any, ...]
#: the tensor a batched structured call hands its method (None outside one)
_HANDED: ContextVar[Optional[Identity]] = ContextVar("lightning_xai_handed", default=None)
#: whether the method in progress was handed that tensor itself (its declarations count)
_TRUSTED: ContextVar[bool] = ContextVar("lightning_xai_trusted", default=False)


def _identity(t: Tensor) -> Identity:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


@contextmanager
def handing(flat: Tensor) -> Iterator[None]:
    """Inside the block, a method handed ``flat`` itself (:func:`entering`) may declare its rows."""
    token = _HANDED.set(_identity(flat))
    try:
        yield
    finally:
        _HANDED.reset(token)


def _handed_itself(inputs: Any) -> bool:
    handed = _HANDED.get()
    return handed is not None and isinstance(inputs, Tensor) and _identity(inputs) == handed


def entering(inputs: Any) -> None:
    """A method starts on ``inputs``: its row declarations count only if they are the tensor handed. The
    value lasts until the enclosing :func:`entered` block ends (the method table opens one per call)."""
    _TRUSTED.set(_handed_itself(inputs))


@contextmanager
def entered(inputs: Any) -> Iterator[None]:
    """:func:`entering` for the duration of the block, then as before."""
    token = _TRUSTED.set(_handed_itself(inputs))
    try:
        yield
    finally:
        _TRUSTED.reset(token)

#: the samples the model calls in progress evaluate: a slice or an index tensor into the method's inputs
_ROWS: ContextVar[Union[None, slice, Tensor]] = ContextVar("lightning_xai_sample_rows", default=None)


@contextmanager
def sample_rows(rows: Union[None, slice, Tensor]) -> Iterator[None]:
    """Declare which samples of its inputs a method's model calls inside the block evaluate: row ``j`` of
    the batch it passes is sample ``rows[j]`` (a slice or an index tensor). Models of several inputs use
    it to give each row its own riding inputs, so that the method runs batched (without it, one probe
    row at a time). The built-in methods declare every call; a user's method may, to run batched too.
    Rows index the inputs the method was given: a method that hands a built-in other rows (a slice, a
    reordering) runs one probe row at a time, as the built-in's rows are then not the probe's.

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
    token = _ROWS.set(rows if _TRUSTED.get() else None)
    try:
        yield
    finally:
        _ROWS.reset(token)


def declared_rows() -> Union[None, slice, Tensor]:
    """The samples the model calls in progress evaluate, as :func:`sample_rows` declared them (None: unknown)."""
    return _ROWS.get()
