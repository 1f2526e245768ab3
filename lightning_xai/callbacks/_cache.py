"""One attribution engine per trainer, shared by every lightning_xai callback of that trainer.

Callbacks that need the same attributions in the same validation epoch get them from the trainer's
:class:`~lightning_xai.engine.AttributionEngine` instead of recomputing; it empties its cache at the
first ``on_validation_epoch_start`` after it was used, so values never leak from one set of
weights to the next.
"""

from __future__ import annotations

import weakref
from typing import Any

from ..engine import AttributionEngine

__all__ = ["engine_for", "cache_for"]

_ENGINES: "weakref.WeakKeyDictionary[Any, AttributionEngine]" = weakref.WeakKeyDictionary()


def engine_for(trainer: Any) -> AttributionEngine:
    """The attribution engine of ``trainer`` (made on first use, dropped with the trainer)."""
    engine = _ENGINES.get(trainer)
    if engine is None:
        engine = _ENGINES[trainer] = AttributionEngine()
    return engine


#: the name the engine had when it was only a cache
cache_for = engine_for
