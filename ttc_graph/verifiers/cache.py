"""A cache of step scores keyed by (question, step prefix), so search never pays twice for a shared prefix."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from ttc_graph.errors import ConfigurationError

__all__ = ["DEFAULT_CACHE_SIZE", "CacheKey", "ScoreCache", "resolve_cache"]

DEFAULT_CACHE_SIZE = 65_536
"""Entries of a verifier's own cache (``cache=True``): bounded, so a long-lived server's memory stays flat."""

CacheKey = tuple[str, str, tuple[str, ...]]
"""``(scope, question, step prefix)``; the scope keeps different verifiers' scores apart in a shared cache."""


class ScoreCache:
    """Step scores by ``(question, steps[:i])``: the score of step ``i`` is the score of that prefix.

    ``hits`` counts lookups answered without a new model call (cached, or already asked for in the same
    batch); ``misses`` counts distinct prefixes that had to be scored. ``max_size`` bounds the number of
    entries (least recently used evicted first); None means unbounded.
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
            raise ConfigurationError(f"max_size: must be an integer >= 1 or None, got {max_size!r}")
        self.max_size = max_size
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[CacheKey, float] = OrderedDict()

    @staticmethod
    def key(question: str, prefix: Iterable[str], scope: str = "") -> CacheKey:
        return (scope, question, tuple(prefix))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"ScoreCache(size={len(self)}, max_size={self.max_size}, hits={self.hits}, misses={self.misses})"

    def get(self, question: str, prefix: Iterable[str], scope: str = "") -> float | None:
        """The cached score of ``prefix`` (counted as a hit or a miss), or None."""
        value = self._lookup(self.key(question, prefix, scope))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, question: str, prefix: Iterable[str], score: float, scope: str = "") -> None:
        self.store(self.key(question, prefix, scope), score)

    def store(self, key: CacheKey, score: float) -> None:
        """Remember ``score`` for ``key`` (evicting the least recently used entry when full)."""
        self._data[key] = float(score)
        self._data.move_to_end(key)
        if self.max_size is not None:
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def partition(self, keys: Iterable[CacheKey]) -> tuple[dict[CacheKey, float], list[CacheKey]]:
        """Split ``keys`` into cached scores and the distinct keys still to score, in first-seen order.

        Each cached key and each repeat of a key already pending counts as a hit; each distinct uncached key
        counts as a miss, so ``misses`` grows by exactly the number of prefixes the caller must score.
        """
        found: dict[CacheKey, float] = {}
        missing: dict[CacheKey, None] = {}
        for key in keys:
            if key in found or key in missing:
                self.hits += 1
                continue
            value = self._lookup(key)
            if value is None:
                missing[key] = None
                self.misses += 1
            else:
                found[key] = value
                self.hits += 1
        return found, list(missing)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._data.clear()
        self.hits = 0
        self.misses = 0

    def stats(self) -> dict[str, Any]:
        return {"size": len(self), "max_size": self.max_size, "hits": self.hits, "misses": self.misses}

    def _lookup(self, key: CacheKey) -> float | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value


def resolve_cache(cache: ScoreCache | bool | None) -> ScoreCache | None:
    """A cache from the ``cache=`` argument of a verifier: True → a new cache of :data:`DEFAULT_CACHE_SIZE` entries
    (least recently used evicted); False/None → none; a :class:`ScoreCache` of any size is used as it is."""
    if isinstance(cache, ScoreCache):
        return cache
    if cache is True:
        return ScoreCache(DEFAULT_CACHE_SIZE)
    if cache is False or cache is None:
        return None
    raise ConfigurationError(f"cache: expected a ScoreCache or a bool, got {type(cache).__name__}")
