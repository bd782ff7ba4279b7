"""The fold loops: read accepted events and fold them into profiles, for ever.

They run on threads of an ``eventfold worker`` process: one that ``eventfold serve``
starts for its fold (the default, ``fold_process.py``) or one an operator runs, or on
threads of ``eventfold serve`` itself (``EVENTFOLD_FOLD_PROCESS=false``). Progress
commits with each fold step, so a loop can be stopped or killed at any moment and
started again without skipping or repeating events. A loop never dies of an error: it
logs it, reports it in its ``FoldHealth`` (the ``/healthz`` and ``/readyz`` of a server
it runs in), waits and tries again; an event that cannot be folded is quarantined by
``FoldService`` so the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from eventfold.observability import metrics
from eventfold.services.fold import FoldHealth, FoldService, describe, fold_events

if TYPE_CHECKING:
    from eventfold.settings import Settings
    from eventfold.storage.base import LoggedBatch, ProfileStore, Storage
    from eventfold.storage.nats import NatsConsumer

logger = logging.getLogger("eventfold.worker")

FOLD_BATCH_SIZE = 2_000
IDLE_POLL_SECONDS = 0.1
RETRY_SECONDS = 1.0
MAX_FETCH_BATCHES = 200
FETCH_BYTES = 8 * 1024 * 1024


def _fold_service(store: ProfileStore) -> FoldService:
    return FoldService(store, on_quarantine=lambda seq, reason: metrics.observe_quarantined())


class FoldWorker:
    def __init__(
        self,
        store: ProfileStore,
        batch_size: int = FOLD_BATCH_SIZE,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._fold = _fold_service(store)
        self._batch_size = batch_size
        self._idle_poll_seconds = idle_poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health = FoldHealth()

    def run(self) -> None:
        """Folds until ``stop`` is called; waits for new events when caught up."""
        self.health.running = True
        try:
            while not self._stop.is_set():
                try:
                    folded = self._fold.fold_pending(self._batch_size)
                    if folded < self._batch_size:
                        # Inside the guard too: a wait that cannot read the database
                        # (not only a locked one) must not end the loop.
                        self._store.wait_for_events(self._idle_poll_seconds)
                    self.health.succeeded()
                except Exception as error:
                    self.health.failed(error)
                    logger.warning("fold step failed, retrying: %s", describe(error))
                    self._stop.wait(RETRY_SECONDS)
        finally:
            self.health.running = False

    def start(self) -> None:
        """Runs the worker on a daemon thread of this process."""
        self._thread = threading.Thread(target=self.run, name="eventfold-fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Asks the loop to finish its current step and waits for the thread, if any."""
        self._stop.set()
        self._store.wake_waiters()
        if self._thread is not None:
            self._thread.join()


class LogFoldWorker:
    """Folds batches from an external log (JetStream) into the database: fetch, apply
    and fold in one transaction that records the batches' positions, then acknowledge.

    While it applies them it tells JetStream so (``NatsConsumer.holding``), and when applying
    fails it gives them back for any worker to fetch again a second later. A crash
    before the commit leaves the batches unacknowledged, and JetStream hands them to a
    worker again after the ack wait; a crash between the commit and the
    acknowledgement redelivers batches whose positions are recorded, which are skipped.
    The fold takes the batches as they were decoded from the stream. When folding them
    fails while the database answers, they are put in the database's own log instead
    and folded from there by ``FoldService``, which quarantines what cannot be folded.
    """

    def __init__(self, log: NatsConsumer, store: ProfileStore) -> None:
        self._log = log
        self._store = store
        self._fold = _fold_service(store)
        self._fetch_batches = MAX_FETCH_BATCHES
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health = FoldHealth()

    async def run_async(self) -> None:
        """Connects and folds until ``stop`` is called."""
        self.health.running = True
        try:
            await self._connect()
            try:
                while not self._stop.is_set():
                    try:
                        await self._step()
                    except Exception as error:
                        self.health.failed(error)
                        logger.warning("log fold step failed, retrying: %s", describe(error))
                        await asyncio.sleep(RETRY_SECONDS)
                        continue
                    self.health.succeeded()
            finally:
                await self._log.disconnect()
        finally:
            self.health.running = False

    async def _connect(self) -> None:
        """Connects to the log, trying again while it cannot be reached (a worker that
        starts during an outage folds once the log is back, instead of ending)."""
        while not self._stop.is_set():
            try:
                await self._log.connect()
                return
            except Exception as error:
                self.health.failed(error)
                logger.warning("cannot reach the log, retrying: %s", describe(error))
                # A connection made before the stream's set-up failed must not linger.
                with contextlib.suppress(Exception):
                    await self._log.disconnect()
                await asyncio.sleep(RETRY_SECONDS)

    async def _step(self) -> None:
        fetched = await self._log.fetch(self._fetch_batches, timeout=IDLE_POLL_SECONDS * 5)
        if not fetched:
            # Idle: fold what waits in the database's own log without a batch to bring
            # it along (events put back from the quarantine, batches folded apart).
            await asyncio.to_thread(self._fold.fold_pending, FOLD_BATCH_SIZE)
            return
        # Fetch about FETCH_BYTES at a time, whatever the batches' size: 200 batches of
        # 1,000 events held 350 MB while they were applied.
        average = sum(len(message.data) for _, message in fetched) / len(fetched)
        self._fetch_batches = max(1, min(MAX_FETCH_BATCHES, int(FETCH_BYTES / average)))
        messages = [message for _, message in fetched]
        try:
            async with self._log.holding(messages):
                await self._apply([batch for batch, _ in fetched])
        except Exception:
            await self._log.give_back(messages)
            raise
        await self._log.acknowledge(messages)

    async def _apply(self, batches: list[LoggedBatch]) -> None:
        forget_below = await self._log.first_position()
        try:
            await asyncio.to_thread(self._store.apply_logged, batches, forget_below, fold_events)
        except Exception as error:
            if not await asyncio.to_thread(self._store.database_answers):
                raise
            logger.warning("folding applied batches failed, folding them apart: %s", error)
            await asyncio.to_thread(self._store.apply_logged, batches, forget_below)
            while await asyncio.to_thread(self._fold.fold_pending, FOLD_BATCH_SIZE):
                pass

    def run(self) -> None:
        asyncio.run(self.run_async())

    def start(self) -> None:
        """Runs the worker on a daemon thread of this process, with its own event loop."""
        self._thread = threading.Thread(target=self.run, name="eventfold-log-fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fold_loops(settings: Settings, storage: Storage) -> list[FoldWorker | LogFoldWorker]:
    """The fold loops ``settings`` ask for (``fold_threads`` of them): from the database,
    or from the JetStream log, each with a connection of its own (run on a thread, each
    has an event loop of its own)."""
    if not settings.log_url:
        return [FoldWorker(storage) for _ in range(settings.fold_threads)]
    from eventfold.storage.nats import NatsConsumer

    return [LogFoldWorker(NatsConsumer(settings), storage) for _ in range(settings.fold_threads)]
