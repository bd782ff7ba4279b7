"""How far profiles are behind what was accepted, read off the event loop and shared.

Ingest's backpressure and ``/healthz``, ``/readyz`` and ``/metrics`` all ask; the
answer is read at most every ``max_age_seconds`` (one read at a time, the others wait
for it), so a busy server does not count the backlog once per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from eventfold.clock import now_ms
from eventfold.storage.base import EventLog, FoldLag


class FoldLagGauge:
    def __init__(
        self,
        log: EventLog,
        max_age_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self._last: FoldLag | None = None
        self._read_at = 0.0
        self._reading: asyncio.Task[FoldLag] | None = None

    async def current(self) -> FoldLag:
        """The lag as read at most ``max_age_seconds`` ago; raises what the read raises."""
        if self._last is not None and self._monotonic() - self._read_at < self._max_age_seconds:
            return self._last
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())
        return await asyncio.shield(self._reading)

    async def _read(self) -> FoldLag:
        try:
            lag = await self._log.backlog(now_ms())
            self._last, self._read_at = lag, self._monotonic()
            return lag
        finally:
            self._reading = None
