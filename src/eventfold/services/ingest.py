"""Accepting a batch: validate every event (or profile upsert), then store all of them
durably or none."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from eventfold.clock import now_ms
from eventfold.domain.fold_input import FoldSource
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.validation import BatchValidator
from eventfold.errors import EventfoldError, InvalidRequest, Overloaded
from eventfold.services.fold_lag import FoldLagGauge
from eventfold.services.rate_limit import RateLimiter
from eventfold.storage.base import EventLog, IdempotencyClaim, LogEntries, Principal

MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Expired idempotency keys are deleted at most this often.
_FORGET_EVERY_MS = 60_000
# Ingest refuses once an event accepted now is predicted to wait for the fold longer than
# this share of the bound (EVENTFOLD_MAX_FOLD_LAG_SECONDS), or, while the fold's rate is
# not known, once the oldest unfolded event has waited that long. Why a client that waits
# out the 503s then sees every accepted event in its profile within the bound:
# - The prediction (FoldLagGauge) is the time the fold takes, at the rate it showed over
#   the last 2.5 s, to fold every event ahead: the backlog counted at the last reading,
#   plus what this process accepted since, less what the fold folded since. It is made
#   for each batch, so a burst of batches between two readings counts in full. It is
#   exact for a fold that keeps its rate. The rest of the bound absorbs what it misses,
#   above all a fold that slows down after the events were accepted (on two busy cores
#   its rate halved within seconds, and at half the bound one event took 10.6 s): at 30 %
#   the fold may slow to a third of its measured rate. Also a rate measured over a few
#   steps of about 2,000 events, events that PostgreSQL commits late (they wait for the
#   queue's rescan, up to 1 s more), and with several server processes the others'
#   batches since the last reading.
# - Refusing at 30 % costs no throughput: the backlog stays 3 s of the fold's work deep,
#   so it never runs dry between two readings (0.5 s), and while ingest refuses nothing
#   joins it: what was accepted only gets closer to its profile.
# - A fold that does not move (stopped, restarting, one long step) has no rate, and
#   nothing predicts when it resumes: the age rule bounds what it finds then to 30 % of
#   the bound's worth of traffic, which a fold that keeps up with the traffic in normal
#   times folds within the rest. A fold stopped for longer than the bound breaks the
#   promise whatever ingest does; /readyz and the fold-lag alert say so.
_REFUSE_AT_SHARE_OF_BOUND = 0.3


class IngestService:
    def __init__(
        self,
        log: EventLog,
        validator: BatchValidator,
        fold_lag: FoldLagGauge,
        idempotency_window_seconds: int,
        max_fold_lag_events: int,
        max_fold_lag_seconds: float,
        upsert_validator: UpsertValidator,
    ) -> None:
        self._log = log
        self._fold_lag = fold_lag
        self._validator = validator
        self._upsert_validator = upsert_validator
        self._window_ms = idempotency_window_seconds * 1000
        self._max_fold_lag_events = max_fold_lag_events
        self._max_fold_lag_seconds = max_fold_lag_seconds
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
        await self.refuse_if_fold_is_behind()
        claim = self._claim(idempotency_key, body, received_at_ms)
        events, fold_sources = self._validator.validate_batch(body, received_at_ms)
        return await self._store(principal, received_at_ms, events, claim, fold_sources)

    async def accept_profiles(
        self, principal: Principal, body: bytes, idempotency_key: str | None = None
    ) -> int:
        """Stores a request of profile upserts as ``accept_batch`` stores events (the
        same log, idempotency keys, rate limit and backpressure, where an upsert counts
        as an event); returns how many profiles it held."""
        received_at_ms = now_ms()
        await self.refuse_if_fold_is_behind()
        claim = self._claim(idempotency_key, body, received_at_ms)
        upserts = self._upsert_validator.validate(body, received_at_ms)
        return await self._store(principal, received_at_ms, upserts, claim)

    async def _store(
        self,
        principal: Principal,
        received_at_ms: int,
        events: LogEntries,
        claim: IdempotencyClaim | None,
        fold_sources: Sequence[FoldSource | None] | None = None,
    ) -> int:
        try:
            self._rate_limiter.take(principal.key_id, principal.rate_limit, len(events))
            if events or claim is not None:
                stored = await self._log.append(
                    principal.account_id, received_at_ms, events, claim, fold_sources
                )
                if stored:
                    self._fold_lag.accepted(len(events))
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

    async def refuse_if_fold_is_behind(self) -> None:
        """Backpressure: past the bounds, new batches wait instead of the backlog growing,
        so that what is accepted is in its profile within ``max_fold_lag_seconds``."""
        outlook = await self._fold_lag.outlook()
        lag = outlook.lag
        if lag.events > self._max_fold_lag_events:
            raise Overloaded(
                f"the fold into profiles is {lag.events} events behind (limit "
                f"{self._max_fold_lag_events}); nothing was stored, retry in a few seconds",
                retry_after=5,
            )
        predicted = outlook.predicted_wait_seconds
        behind = lag.seconds if predicted is None else predicted
        refuse_past = self._max_fold_lag_seconds * _REFUSE_AT_SHARE_OF_BOUND
        if behind <= refuse_past:
            return
        # Nothing new joins the backlog now, so the wait falls by a second a second; at
        # most refuse_past, as a slow rate predicts long and may pick up again.
        retry_after = max(1, min(math.ceil(behind - refuse_past), math.ceil(refuse_past)))
        raise Overloaded(
            f"the fold into profiles is {behind:.1f} s behind, and events accepted now "
            f"must be in profiles within {self._max_fold_lag_seconds:g} s; nothing was "
            f"stored, retry in {retry_after} s",
            retry_after=retry_after,
        )
