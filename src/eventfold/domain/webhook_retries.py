"""When to try a message again: the Standard Webhooks schedule with jitter, what an
answer means (delivered, retry, give up, endpoint gone), and ``Retry-After``."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum

# The delay before each attempt: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_SCHEDULE_SECONDS = (0.0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
JITTER = 0.1  # each delay is stretched by up to this fraction, so retries do not march together
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0
RETRIED_STATUSES = frozenset({408, 429})


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # tried again later, while the schedule lasts
    REFUSED = "refused"  # a 4xx that a retry would not change: failed at once
    GONE = "gone"  # 410: the endpoint is disabled


def outcome_of(status_code: int | None) -> Outcome:
    """What an answer's status means (None: no answer, a network error or a timeout)."""
    if status_code is None:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code == 410:
        return Outcome.GONE
    if 400 <= status_code < 500 and status_code not in RETRIED_STATUSES:
        return Outcome.REFUSED
    return Outcome.RETRY  # 5xx, 408, 429 and redirects (which are not followed)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays: Sequence[float] = DEFAULT_SCHEDULE_SECONDS

    def next_delay(
        self,
        attempts_made: int,
        retry_after: float | None = None,
        draw: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds until the next attempt after ``attempts_made`` failed ones, never
        sooner than ``Retry-After``; None when the schedule is used up."""
        if attempts_made >= len(self.delays):
            return None
        delay = float(self.delays[attempts_made]) * (1 + JITTER * draw())
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return delay


def parse_schedule(text: str) -> RetrySchedule:
    """``"0,5,300"``: the delays before each attempt, in seconds; empty: the default."""
    if not text.strip():
        return RetrySchedule()
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of seconds") from None
    if any(delay < 0 for delay in delays):
        raise ValueError(f"{text!r} holds a negative delay")
    return RetrySchedule(delays)


def parse_retry_after(value: str | None, now_seconds: float) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now_seconds)
    except (TypeError, ValueError, IndexError):
        return None
