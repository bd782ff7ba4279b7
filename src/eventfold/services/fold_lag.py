"""How far profiles are behind what was accepted, read off the event loop and shared.

Ingest's backpressure and ``/healthz``, ``/readyz`` and ``/metrics`` all ask; the
answer is read at most every ``max_age_seconds`` (one read at a time, the others wait
for it), so a busy server does not count the backlog once per request; the last three
read it again when the process has accepted events since.

The readings also measure how many events the fold folds per second (from the count of
events every fold loop has folded, which the database keeps), from which ingest
predicts how long an event accepted now waits before it is in its profile
(``FoldOutlook``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from eventfold.clock import now_ms
from eventfold.storage.base import EventLog, FoldLag

# The fold's rate is measured over the readings of the last 2.5 s: several fold steps
# (each a transaction of about 2,000 events, the count standing still in between: 0.5 s
# at 4,000 events/s) and readings (every 0.5 s), recent enough to follow a fold that
# slows down.
RATE_WINDOW_SECONDS = 2.5


@dataclass(frozen=True, slots=True)
class FoldOutlook:
    """The lag, and how long an event accepted now is predicted to wait for the fold."""

    lag: FoldLag
    # At the fold's measured rate; None while it is not known (a fold not seen at work
    # yet, or one that folded nothing over the last readings: stopped, or in one long
    # step).
    predicted_wait_seconds: float | None


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float  # wall-clock seconds when the backlog was read
    events: int  # unfolded events then
    accepted: int  # events this process had accepted by then
    folded: int | None  # events every fold loop had folded by then, if known


class FoldLagGauge:
    def __init__(
        self,
        log: EventLog,
        max_age_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._log = log
        self._max_age_seconds = max_age_seconds
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._last: FoldLag | None = None
        self._read_at = 0.0
        self._reading: asyncio.Task[FoldLag] | None = None
        self._accepted = 0  # events this process accepted, ever
        self._readings: deque[_Reading] = deque()  # of the last RATE_WINDOW_SECONDS
        # Events per second the fold folded while it had a backlog, last measured: a
        # fold's rate is its own (unlike the backlog), so it carries over to the next
        # backlog, which is then predicted from its first reading on.
        self._rate: float | None = None

    async def current(self) -> FoldLag:
        """The lag for ``/healthz``, ``/readyz`` and ``/metrics``: as read at most
        ``max_age_seconds`` ago, or read now when this process has accepted events since
        (a reading that saw nothing unfolded must not say so of a batch accepted after
        it, which a fold in another process, the default, folds a few milliseconds
        later); raises what the read raises."""
        accepted = self._accepted
        lag = await self._read_at_most(self._max_age_seconds)
        # A reading (reused, or one in flight when asked) that predates acceptances: read
        # again; each new reading counts every acceptance made before it started.
        while self._readings and self._readings[-1].accepted < accepted:
            lag = await self._read_at_most(0.0)
        return lag

    async def _read_at_most(self, max_age_seconds: float) -> FoldLag:
        """The lag as read at most ``max_age_seconds`` ago (one read at a time)."""
        if self._last is not None and self._monotonic() - self._read_at < max_age_seconds:
            return self._last
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())
        return await asyncio.shield(self._reading)

    def accepted(self, events: int) -> None:
        """Counts events this process has just stored: they are in the backlog now,
        whether the last reading saw them or not."""
        self._accepted += events

    async def outlook(self) -> FoldOutlook:
        """The lag as read at most ``max_age_seconds`` ago (once per request would count
        the backlog once per batch) with the predicted wait of an event accepted now,
        which counts in what this process accepted since the reading."""
        lag = await self._read_at_most(self._max_age_seconds)
        return FoldOutlook(lag, self._predicted_wait(self._wall_ms() / 1000))

    def _predicted_wait(self, now: float) -> float | None:
        """The fold takes the oldest unfolded events first, so an event accepted now
        waits until the events ahead of it are folded: those of the latest reading, plus
        those this process accepted since, less those the fold has folded since at its
        rate. With several server processes, the others' acceptances since the
        reading are missing here, but their acceptances over the window also lower the
        measured rate (see ``_measure_rate``), which outweighs them while the backlog
        holds more than a reading's worth of the fold's work."""
        if not self._readings or self._rate is None:
            return None
        latest = self._readings[-1]
        since = max(0.0, now - latest.at)
        ahead = latest.events + (self._accepted - latest.accepted) - self._rate * since
        return max(0.0, ahead) / self._rate

    async def _read(self) -> FoldLag:
        try:
            reading_at_ms, accepted = self._wall_ms(), self._accepted
            lag = await self._log.backlog(reading_at_ms)
            self._remember(_Reading(reading_at_ms / 1000, lag.events, accepted, lag.folded))
            self._last, self._read_at = lag, self._monotonic()
            return lag
        finally:
            self._reading = None

    def _remember(self, reading: _Reading) -> None:
        self._readings.append(reading)
        while self._readings[0].at < reading.at - RATE_WINDOW_SECONDS:
            self._readings.popleft()
        self._measure_rate()

    def _measure_rate(self) -> None:
        """Events folded per second between readings that both saw a backlog (the fold
        was at work all along): the growth of the database's count of folded events.
        Without that count (a log that does not keep one), the fall of the backlog plus
        what this process accepted meanwhile: other processes' acceptances are not seen
        there, so that is a floor, and with two API nodes it fell to a tenth of the
        fold's true rate (1,400 s predicted where events took 3 s). Readings with no
        backlog leave the last rate as it was; a backlog that was not folded at all over
        the window leaves no rate (a stopped fold, for which ingest falls back to the
        oldest event's age)."""
        folded, busy = 0, 0.0
        for before, after in pairwise(self._readings):
            if before.events and after.events:
                if before.folded is not None and after.folded is not None:
                    folded += after.folded - before.folded
                else:
                    folded += before.events - after.events + (after.accepted - before.accepted)
                busy += after.at - before.at
        if busy > 0:
            self._rate = folded / busy if folded > 0 else None
