"""Accepting a batch: validate every event, then store all of them durably or none."""

from __future__ import annotations

import hashlib

from eventfold.clock import now_ms
from eventfold.domain.validation import BatchValidator
from eventfold.errors import EventfoldError, InvalidRequest, Overloaded
from eventfold.services.fold_lag import FoldLagGauge
from eventfold.services.rate_limit import RateLimiter
from eventfold.storage.base import EventLog, IdempotencyClaim, Principal

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Expired idempotency keys are deleted at most this often.
_FORGET_EVERY_MS = 60_000


class IngestService:
    def __init__(
        self,
        log: EventLog,
        validator: BatchValidator,
        fold_lag: FoldLagGauge,
        idempotency_window_seconds: int,
        max_fold_lag_events: int,
    ) -> None:
        self._log = log
        self._fold_lag = fold_lag
        self._validator = validator
        self._window_ms = idempotency_window_seconds * 1000
        self._max_fold_lag_events = max_fold_lag_events
        self._rate_limiter = RateLimiter()
        self._forgotten_at_ms = 0

    async def accept_batch(
        self, principal: Principal, body: bytes, idempotency_key: str | None = None
    ) -> int:
        """Stores the batch for the principal's account; returns how many events it held.

        Returns only after the events are committed to disk. Raises InvalidRequest (with
        every problem), RateLimited, IdempotencyConflict or a RetryLater error, and in
        all those cases nothing is stored. A repeat of an idempotency key with the same
        body stores nothing and returns as if it had.
        """
        received_at_ms = now_ms()
        await self._refuse_if_fold_is_behind()
        claim = self._claim(idempotency_key, body, received_at_ms)
        events = self._validator.validate(body, received_at_ms)
        try:
            self._rate_limiter.take(principal.key_id, principal.rate_limit, len(events))
            if events or claim is not None:
                await self._log.append(principal.account_id, received_at_ms, events, claim)
        except EventfoldError as error:
            error.event_count = len(events)
            raise
        return len(events)

    def _claim(self, key: str | None, body: bytes, now: int) -> IdempotencyClaim | None:
        if key is None:
            return None
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            )
        if now - self._forgotten_at_ms > _FORGET_EVERY_MS:
            self._forgotten_at_ms = now
            self._log.forget_idempotency_keys(now - self._window_ms)
        return IdempotencyClaim(key, hashlib.sha256(body).digest(), now - self._window_ms)

    async def _refuse_if_fold_is_behind(self) -> None:
        """Backpressure: past the bound, new batches wait instead of the backlog growing."""
        behind = (await self._fold_lag.current()).events
        if behind > self._max_fold_lag_events:
            raise Overloaded(
                f"the fold into profiles is {behind} events behind (limit "
                f"{self._max_fold_lag_events}); nothing was stored, retry in a few seconds",
                retry_after=5,
            )
