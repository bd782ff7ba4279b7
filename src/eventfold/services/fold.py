"""The fold as a use case: take the next batches of accepted events from the log, ask
storage for the people they name, fold them with the pure domain code, and ask storage
to save the result (profiles and the events' rows); and set aside what cannot be folded,
so that one bad event never stops the fold for everyone.

Storage runs each step in one transaction (``ProfileStore.fold``) and keeps concurrent
steps apart by person (``storage/sql_fold.py``). When a step fails while the database
answers, its batches are tried once more together, then split in halves, each folded on
its own, down to single batches; a batch that fails alone is split into its events, and
those are halved in turn: what folds commits, and an event that still fails alone
(twice, a moment apart) is quarantined with its error. When the database does not
answer, nothing is set aside: the failure is an outage and the step is retried later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventfold.domain.fold_input import FoldItem, identifiers_of
from eventfold.domain.profile_book import ProfileBook
from eventfold.errors import EventfoldError, FoldContention, StorageUnavailable
from eventfold.services.segments_fold import fold_segments
from eventfold.storage.base import (
    FoldTransaction,
    PendingEvent,
    PendingItem,
    PendingUpsert,
    ProfileStore,
)

logger = logging.getLogger("eventfold.fold")

# A step that met another fold's changes is tried again at once, this many times.
CONTENTION_RETRIES = 3
# A failed step, and an event that failed alone, are tried once more after this.
SECOND_TRY_SECONDS = 0.2
# Events folded per step when everything pending is folded at once (erasure, logs).
EVERYTHING_STEP = 5_000


def fold_claimed(tx: FoldTransaction, max_events: int, seqs: Sequence[int] | None = None) -> int:
    """Claims the next batches of the log holding up to ``max_events`` events (or the
    batches at these positions) in ``tx`` and folds them into their people's profiles;
    returns how many events it folded."""
    return fold_events(tx, tx.claim(max_events, seqs))


def fold_events(tx: FoldTransaction, events: Sequence[PendingItem]) -> int:
    """Folds these events and profile upserts into their people's profiles in ``tx``
    and saves them with the events' rows; returns how many. An upsert is folded at its
    position like an event, and then is no event: no row, no ``event.matched``."""
    if not events:
        return 0
    keys = {
        (pending.account_id, *identifier)
        for pending in events
        for identifier in identifiers_of(_what_folds(pending))
    }
    identities, states = tx.load_people(keys)
    book = ProfileBook(identities, states, tx.allocate_profile_id)
    joined = [
        (
            pending,
            book.fold(
                pending.account_id,
                _what_folds(pending),
                pending.accepted.occurred_at_ms,
                pending.seq,
            ),
        )
        for pending in events
    ]
    book.settle()
    folded = [(pending, book.final_id(profile_id)) for pending, profile_id in joined]
    tx.save(book, folded)
    fold_segments(tx, book, [(profile_id, pending) for pending, profile_id in folded])
    # The webhooks' outbox, in the fold's transaction (services/webhook_delivery.py sends).
    tx.queue_webhooks(
        book, [(pending, pid) for pending, pid in folded if isinstance(pending, PendingEvent)]
    )
    return len(events)


def _what_folds(pending: PendingItem) -> FoldItem:
    return pending.upsert if isinstance(pending, PendingUpsert) else pending.event


def fold_everything(tx: FoldTransaction) -> int:
    """Folds every unfolded event in ``tx``, in steps; returns how many."""
    folded = 0
    while step := fold_claimed(tx, EVERYTHING_STEP):
        folded += step
    return folded


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
        for _ in range(CONTENTION_RETRIES):
            try:
                return self._fold(max_events)
            except FoldContention:
                continue  # another fold filed a person of this step: the retry sees it
            except Exception as error:
                self._raise_if_outage(error)
                logger.warning("fold step failed, trying its events again: %s", describe(error))
                break
        # The oldest batches by position (the failed step's claim moved the log's cursor
        # past them): all together once more, then in halves.
        seqs = self._store.pending_batches(max_events)
        self._sleep(SECOND_TRY_SECONDS)
        return self._fold_or_split(seqs)

    def _fold(self, max_events: int, seqs: Sequence[int] | None = None) -> int:
        return self._store.fold(
            lambda tx: fold_claimed(tx, max_events, seqs), rows=max(1, len(seqs or ()))
        )

    def _fold_or_split(self, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        try:
            return self._fold(len(seqs), seqs)
        except Exception as error:
            self._raise_if_outage(error)
            if len(seqs) > 1:
                half = len(seqs) // 2
                return self._fold_or_split(seqs[:half]) + self._fold_or_split(seqs[half:])
            events = self._store.split_batch(seqs[0])
            if len(events) > 1:
                return self._fold_or_split(events)
            return self._second_try_or_quarantine(seqs[0]) if events else 0

    def _second_try_or_quarantine(self, seq: int) -> int:
        self._sleep(SECOND_TRY_SECONDS)
        try:
            return self._fold(1, [seq])
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

    @classmethod
    def reported(cls, loops: LoopsHealth) -> FoldHealth:
        """A health that says what another process reported of its loops."""
        health = cls()
        health.running = loops.running
        if loops.last_error is not None:
            health.failing_since = health._monotonic() - loops.failing_for_seconds
            health.last_error = loops.last_error
        return health


@dataclass(frozen=True, slots=True)
class LoopsHealth:
    """Some loops of one process, together: running only if all are, failing for as long
    as the one failing longest, with the first error."""

    running: bool
    failing_for_seconds: float
    last_error: str | None


def combined_health(healths: Sequence[FoldHealth]) -> LoopsHealth:
    errors = [health.last_error for health in healths if health.last_error is not None]
    return LoopsHealth(
        running=all(health.running for health in healths),
        failing_for_seconds=max((health.failing_for() for health in healths), default=0.0),
        last_error=errors[0] if errors else None,
    )
