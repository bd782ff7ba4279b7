"""The one exception hierarchy of eventfold.

Every error that can reach a client carries its HTTP status and a message written for
the developer who must fix the request. Third-party errors are translated into these at
the layer where they happen (``raise X(...) from None``), so nothing else leaks upward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of a request, e.g. ``events[3].email``."""

    path: str
    message: str


class EventfoldError(Exception):
    """Base class: ``status`` is the HTTP status a client sees, ``message`` the text."""

    status = 500
    # How many events the rejected request held, where that was known (for metrics).
    event_count = 0

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        """The error's kind in snake case, e.g. ``rate_limited``: a metrics label."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class InvalidRequest(EventfoldError):
    """The request is malformed or one of its fields is invalid."""

    status = 400

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Unauthorized(EventfoldError):
    """No usable secret key was sent."""

    status = 401


class NotFound(EventfoldError):
    status = 404


class MergedAway(NotFound):
    """A profile id that was merged into another profile (an event linked the two)."""

    def __init__(self, message: str, merged_into: str) -> None:
        super().__init__(message)
        self.merged_into = merged_into


class Conflict(EventfoldError):
    """The request clashes with what exists (a segment key taken, a segment still named)."""

    status = 409


class RequestTimeout(EventfoldError):
    status = 408


class IdempotencyConflict(EventfoldError):
    """The idempotency key was already used with a different body."""

    status = 422


class PayloadTooLarge(EventfoldError):
    status = 413


class UnsupportedMediaType(EventfoldError):
    status = 415


class RetryLater(EventfoldError):
    """Nothing was stored; the same request may succeed after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    """The key sent more events per second than its limit allows."""

    status = 429


class StorageUnavailable(RetryLater):
    """The database cannot take writes right now (disk full, locked, read-only, down)."""


class FoldContention(StorageUnavailable):
    """Another fold changed the people a fold step reads; trying the step again resolves it."""


class Overloaded(RetryLater):
    """The writer has more work queued than its bound; back off and retry."""


class ConfigurationError(EventfoldError):
    """A setting or command-line argument is wrong; raised at start-up, never to clients."""
