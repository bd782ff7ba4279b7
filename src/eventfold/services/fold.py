"""The fold's use case around storage: fold what is pending, and set aside what cannot be
folded so that one bad event never stops the fold for everyone.

Storage folds a slice of the queue in one transaction. When that fails while the
database answers, the slice is split in halves, each folded on its own, down to single
events: what folds commits, and an event that still fails alone (twice, a moment apart)
is quarantined with its error. When the database does not answer, nothing is set aside:
the failure is an outage and the step is simply retried later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from eventfold.errors import EventfoldError, StorageUnavailable
from eventfold.storage.base import ProfileStore

logger = logging.getLogger("eventfold.fold")

# Before an event that failed alone is quarantined, it is tried once more after this.
SECOND_TRY_SECONDS = 0.2


class FoldService:
    def __init__(
        self,
        store: ProfileStore,
        on_quarantine: Callable[[int, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._on_quarantine = on_quarantine
        self._sleep = sleep

    def fold_pending(self, max_events: int) -> int:
        """Folds up to ``max_events`` of the oldest unfolded events; returns how many
        left the queue (folded or quarantined). Raises StorageUnavailable when the
        database does not answer."""
        try:
            return self._store.fold_pending(max_events)
        except Exception as error:
            self._raise_if_outage(error)
            logger.warning("fold step failed, isolating its events: %s", describe(error))
        return self._fold_or_split(self._store.pending_events(max_events))

    def _fold_or_split(self, seqs: Sequence[int]) -> int:
        try:
            return self._store.fold_events(seqs)
        except Exception as error:
            self._raise_if_outage(error)
            if len(seqs) > 1:
                half = len(seqs) // 2
                return self._fold_or_split(seqs[:half]) + self._fold_or_split(seqs[half:])
            return self._second_try_or_quarantine(seqs[0])

    def _second_try_or_quarantine(self, seq: int) -> int:
        self._sleep(SECOND_TRY_SECONDS)
        try:
            return self._store.fold_events([seq])
        except Exception as error:
            self._raise_if_outage(error)
            reason = describe(error)
            self._store.quarantine(seq, reason)
            logger.error("event %d cannot be folded and was quarantined: %s", seq, reason)
            if self._on_quarantine is not None:
                self._on_quarantine(seq, reason)
            return 1

    def _raise_if_outage(self, error: Exception) -> None:
        if not self._store.database_answers():
            raise StorageUnavailable(
                f"the database does not answer; the fold waits for it ({describe(error)})"
            ) from error


def describe(error: BaseException) -> str:
    """One line saying what went wrong, for logs and the quarantine."""
    text = error.message if isinstance(error, EventfoldError) else str(error)
    return f"{type(error).__name__}: {' '.join(text.split())}"


class FoldHealth:
    """What a fold loop reports about itself: running, and failing since when, with what.

    Written by the loop's thread, read by health endpoints; each field is replaced
    whole, so readers need no lock.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.running = False
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def succeeded(self) -> None:
        self.failing_since = None
        self.last_error = None

    def failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = self._monotonic()
        self.last_error = describe(error)

    def failing_for(self) -> float:
        """Seconds the loop has failed without a success in between (0 when fine)."""
        since = self.failing_since
        return 0.0 if since is None else self._monotonic() - since
