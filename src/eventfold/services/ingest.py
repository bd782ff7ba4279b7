"""Accepting a batch: validate every event, then store all of them durably or none."""

from __future__ import annotations

from eventfold.clock import now_ms
from eventfold.domain.validation import BatchValidator
from eventfold.storage.base import EventLog, Principal


class IngestService:
    def __init__(self, log: EventLog, validator: BatchValidator) -> None:
        self._log = log
        self._validator = validator

    async def accept_batch(self, principal: Principal, body: bytes) -> int:
        """Stores the batch for the principal's account; returns how many events it held.

        Returns only after the events are committed to disk; raises InvalidRequest (with
        every problem) or a RetryLater error, and in both cases nothing is stored.
        """
        received_at_ms = now_ms()
        events = self._validator.validate(body, received_at_ms)
        if events:
            await self._log.append(principal.account_id, received_at_ms, events)
        return len(events)
