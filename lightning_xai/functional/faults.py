"""Surviving out-of-memory errors: halve the chunk and try again."""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple, TypeVar

import torch

__all__ = ["is_out_of_memory", "with_oom_retry"]

T = TypeVar("T")

_OOM_TYPES: Tuple[type, ...] = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an accelerator or host out-of-memory error."""
    if _OOM_TYPES and isinstance(err, _OOM_TYPES):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def with_oom_retry(fn: Callable[[int], T], chunk_size: Optional[int], n_rows: int) -> Tuple[T, int]:
    """Call ``fn(chunk)``; on an out-of-memory error halve ``chunk`` and call again, down to 1.

    Returns the result and the chunk size that worked (callers keep it for the next epoch).
    Other errors, and an out-of-memory error at chunk 1, propagate.

    Example:
        >>> def work(chunk):
        ...     if chunk > 4:
        ...         raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        ...     return chunk * 10
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     with_oom_retry(work, None, n_rows=16)
        (40, 4)
    """
    chunk = max(1, int(chunk_size if chunk_size is not None else n_rows))
    while True:
        try:
            return fn(chunk), chunk
        except Exception as err:  # noqa: BLE001 - only out-of-memory is retried
            if not is_out_of_memory(err) or chunk == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            new = max(1, chunk // 2)
            warnings.warn(
                f"out of memory while explaining with chunk_size={chunk}; retrying with chunk_size={new}. "
                "Pass a smaller chunk_size to skip the retries.",
                RuntimeWarning,
                stacklevel=2,
            )
            chunk = new
