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

    def peek(self, key: str) -> int:
        """Like check() without taking a token: 0, or milliseconds to wait."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._refill)
        return 0 if tokens >= 1.0 else int((1.0 - tokens) / self._refill * 1000) + 1

    def _store(self, key: str, tokens: float, now: float) -> None:
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Forget full buckets first: they carry no state worth keeping.
            self._buckets = {
                k: v for k, v in self._buckets.items() if v[0] < self._burst
            }
        self._buckets[key] = (tokens, now)


class TokenBucket:
    """One key's bucket, for limits that live and die with a connection."""

    __slots__ = ("_burst", "_clock", "_refill", "_stamp", "_tokens")

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refill = rate / per
        self._burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._tokens = self._burst
        self._stamp = clock()

    def take(self) -> int:
        """Take one token; returns 0 when allowed, else milliseconds to wait."""
        now = self._clock()
        self._tokens = min(
            self._burst, self._tokens + (now - self._stamp) * self._refill
        )
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        return int((1.0 - self._tokens) / self._refill * 1000) + 1
