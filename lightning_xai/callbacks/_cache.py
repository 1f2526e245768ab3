"""One attribution per (method, options, probe, target) and validation epoch, shared by all callbacks.

Callbacks that need the same attributions in the same validation epoch get them from one per-trainer
cache instead of recomputing. The cache empties at the first ``on_validation_epoch_start`` after it
was used, so values never leak from one epoch (or one set of weights) to the next.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any, Callable, Dict, Hashable, List, Tuple

__all__ = ["AttributionCache", "cache_for"]


class AttributionCache:
    def __init__(self) -> None:
        self._store: Dict[Hashable, Any] = {}
        self._used = False
        #: how many times each method was actually computed (tests and benchmarks read it)
        self.computed: Counter = Counter()
        #: watchers of the shared probe forward (``XAICallback._outputs``): {key: (probe fingerprint, factory)}
        self._taps: Dict[Hashable, Tuple[str, Callable[[Any], Any]]] = {}

    def start_epoch(self) -> None:
        """Called by every callback at ``on_validation_epoch_start``; only the first of a run clears."""
        if self._used:
            self._store.clear()
            self._used = False

    def get(self, key: Hashable) -> Any:
        self._used = True
        return self._store.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._used = True
        self._store[key] = value

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = compute()
            self.put(key, value)
        return value

    # taps: a callback that wants to watch the probe's forward pass (e.g. count ReLUs) instead of
    # running its own registers ``factory(model) -> context manager`` at on_validation_epoch_start;
    # the one probe forward of the epoch enters it, and what its ``__enter__`` returned is stored
    # under ``key``. Taps live outside the store (start_epoch does not clear them): the owner removes them.
    def add_tap(self, key: Hashable, fingerprint: str, factory: Callable[[Any], Any]) -> None:
        self._taps[key] = (fingerprint, factory)

    def remove_tap(self, key: Hashable) -> None:
        self._taps.pop(key, None)

    def taps_for(self, fingerprint: str) -> List[Tuple[Hashable, Callable[[Any], Any]]]:
        return [(k, f) for k, (fp, f) in self._taps.items() if fp == fingerprint]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store


_CACHES: "weakref.WeakKeyDictionary[Any, AttributionCache]" = weakref.WeakKeyDictionary()


def cache_for(trainer: Any) -> AttributionCache:
    """The attribution cache of ``trainer`` (made on first use, dropped with the trainer)."""
    cache = _CACHES.get(trainer)
    if cache is None:
        cache = _CACHES[trainer] = AttributionCache()
    return cache
