"""Per-key rate limits: a token bucket of events per second, kept in each process.

A batch is let through while the bucket is not empty and may take it below zero, so a
batch larger than one second's allowance still passes once, and the key then waits
until the debt is repaid. The average rate never exceeds the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from eventfold.errors import RateLimited


class RateLimiter:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    def take(self, key_id: str, rate: float | None, events: int) -> None:
        """Spends ``events`` tokens of the key's bucket; raises RateLimited if it is empty."""
        if rate is None:
            return
        now = self._monotonic()
        tokens, when = self._buckets.get(key_id, (rate, now))
        tokens = min(rate, tokens + (now - when) * rate)
        if tokens <= 0:
            self._buckets[key_id] = (tokens, now)
            wait = max(1, math.ceil(-tokens / rate + 1e-9))
            raise RateLimited(
                f"this key may send {rate:g} events per second and is over that; nothing "
                f"was stored, retry after {wait} s",
                retry_after=wait,
            )
        self._buckets[key_id] = (tokens - events, now)
