"""A token bucket: deterministic given the times it is asked at."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second refill a bucket holding at most ``capacity``.

    The bucket starts full. ``try_acquire`` takes one token if there is one.
    Time comes from ``now`` when given, else from ``clock`` (monotonic).
    """

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def try_acquire(self, now: float | None = None) -> bool:
        """Take one token if available; False means the caller is over the limit."""
        self._refill(self._clock() if now is None else now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def available(self, now: float | None = None) -> float:
        """Tokens currently in the bucket (for stats and tests)."""
        self._refill(self._clock() if now is None else now)
        return self._tokens
