"""The fold worker: reads accepted events in order and folds them into profiles.

It runs as a thread inside ``eventfold serve`` (the embedded default) or as its own
process (``eventfold worker``). Its progress commits with each fold step, so it can be
stopped or killed at any moment and started again without skipping or repeating events.
"""

from __future__ import annotations

import logging
import threading

from eventfold.errors import RetryLater
from eventfold.storage.base import ProfileStore

logger = logging.getLogger("eventfold.worker")

FOLD_BATCH_SIZE = 2_000
IDLE_POLL_SECONDS = 0.1
RETRY_SECONDS = 1.0


class FoldWorker:
    def __init__(
        self,
        store: ProfileStore,
        batch_size: int = FOLD_BATCH_SIZE,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._idle_poll_seconds = idle_poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Folds until ``stop`` is called; waits for new events when caught up."""
        while not self._stop.is_set():
            try:
                folded = self._store.fold_pending(self._batch_size)
            except RetryLater as error:
                logger.warning("fold step failed, retrying: %s", error.message)
                self._stop.wait(RETRY_SECONDS)
                continue
            if folded < self._batch_size:
                self._store.wait_for_events(self._idle_poll_seconds)

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
