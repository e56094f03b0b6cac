"""In-memory token buckets: how many actions per second a key may take."""

from __future__ import annotations

import math
import time


class TokenBuckets:
    """One bucket per key; :meth:`take` says how long to wait (0: allowed now).

    Idle keys are forgotten once their bucket is full again, so memory follows
    the number of active keys.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: object, n: int = 1, now: float | None = None) -> int:
        """Take ``n`` tokens; returns 0, or the whole seconds until they would be there."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= n:
            self._buckets[key] = (tokens - n, now)
            if len(self._buckets) > 100_000:
                self._sweep(now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((n - tokens) / self.rate))

    def _sweep(self, now: float) -> None:
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
