"""What a process runs in the background: the log's connection, its fold loops and its
webhook delivery loop. ``eventfold serve`` starts it in the HTTP app's lifespan and
``eventfold worker`` in the foreground; ``bootstrap`` builds it for both."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Protocol

from eventfold.services.fold import FoldHealth, LoopsHealth, combined_health
from eventfold.services.segment_loops import SegmentLoopsHealth
from eventfold.storage.base import EventLog


class FoldLoop(Protocol):
    @property
    def health(self) -> FoldHealth:
        """How the loop is doing."""

    def start(self) -> None:
        """Runs the loop on a thread of its own."""

    def stop(self) -> None:
        """Asks the loop to finish its step, and waits for it."""


class SegmentLoopsRunner(Protocol):
    """The segments' backfill and timer, as a process runs or watches them."""

    def start(self) -> None:
        """Starts the loops."""

    def stop(self) -> None:
        """Stops the loops, and waits for them."""

    def wake(self) -> None:
        """A segment was saved: the backfill should start now."""

    def loops_health(self) -> LoopsHealth:
        """How the loops are doing (reads no database)."""

    def health(self) -> SegmentLoopsHealth:
        """How the loops are doing, with the timer's lag."""


class BackgroundWork:
    def __init__(
        self,
        log: EventLog,
        folds: Sequence[FoldLoop],
        segments: SegmentLoopsRunner | None = None,
        deliveries: FoldLoop | None = None,
    ) -> None:
        self._log = log
        self._folds = list(folds)
        # The segments' backfill and timer, where this process folds (or watches the
        # fold's process, which runs them).
        self.segments = segments
        self._deliveries = deliveries

    async def start(self) -> None:
        await self._log.connect()
        for fold in self._folds:
            fold.start()
        if self.segments is not None:
            self.segments.start()
        if self._deliveries is not None:
            self._deliveries.start()

    async def stop(self) -> None:
        if self._deliveries is not None:
            await asyncio.to_thread(self._deliveries.stop)
        if self.segments is not None:
            self.segments.stop()
        for fold in self._folds:
            await asyncio.to_thread(fold.stop)  # a fold process may take seconds to stop
        await self._log.disconnect()

    def delivery_health(self) -> FoldHealth | None:
        """How this process's webhook delivery loop is doing; None when it runs none."""
        return None if self._deliveries is None else self._deliveries.health

    async def run_until_signalled(self) -> None:
        """Starts, runs until SIGINT or SIGTERM, then stops (``eventfold worker``)."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        await self.start()
        try:
            await stopping.wait()
        finally:
            await self.stop()

    def fold_health(self) -> LoopsHealth | None:
        """How this process's fold loops are doing; None when it runs none."""
        if not self._folds:
            return None
        return combined_health([fold.health for fold in self._folds])
