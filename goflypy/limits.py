"""Token-bucket rate limits, keyed by whatever the caller names."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """``rate`` events per ``per`` seconds for each key, bursts up to ``burst``."""

    def __init__(
        self,
        rate: float,
        per: float = 60.0,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._refill = rate / per
        self._burst = burst if burst is not None else max(rate / 4, 3.0)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> int:
        """Take one token; returns 0 when allowed, else milliseconds to wait."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._refill)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0
        self._store(key, tokens, now)
        return int((1.0 - tokens) / self._refill * 1000) + 1

    def _store(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Forget full buckets first: they carry no state worth keeping.
            self._buckets = {
                k: v for k, v in self._buckets.items() if v[0] < self._burst
            }
        self._buckets[key] = (tokens, now)
