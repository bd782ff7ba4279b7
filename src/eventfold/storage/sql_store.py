"""``SqlStorage``: the storage contract in SQL both backends speak (``?`` placeholders):
the log of accepted batches, profiles and the fold's persistence, over ``SqlBase``'s
connections and ``SqlKeys``' keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import cast

from eventfold.clock import now_ms as current_ms
from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.errors import IdempotencyConflict
from eventfold.storage import sql_log, sql_logged, sql_profiles
from eventfold.storage.base import (
    EventQuery,
    FoldEvents,
    FoldLag,
    FoldStep,
    IdempotencyClaim,
    LogEntries,
    LoggedBatch,
    ProfileRow,
    QuarantinedEvent,
    StoredEvent,
)
from eventfold.storage.batch_records import decode_entries, encode_entries
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import EVENT_COLUMNS, Row
from eventfold.storage.sql_deliveries import SqlWebhooks
from eventfold.storage.sql_fold import QueueCursor, SqlFoldTransaction, pending_items
from eventfold.storage.sql_idempotency import claim_key
from eventfold.storage.sql_keys import SqlKeys
from eventfold.storage.sql_segments import SqlSegmentStore

__all__ = ["EVENT_COLUMNS", "Row", "SqlStorage"]
logger = logging.getLogger("eventfold.storage")


class SqlStorage(SqlSegmentStore, SqlKeys, SqlWebhooks):
    """Keys, accounts, the event log, profiles, segments and webhooks, over a group-commit
    writer."""

    # --- events ---------------------------------------------------------------------

    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: LogEntries,
        claim: IdempotencyClaim | None = None,
        fold_sources: Sequence[FoldSource | None] | None = None,
    ) -> bool:
        record = encode_entries(events) if events else b""

        def insert(connection: SqlConnection) -> int | None:
            if claim is not None and not claim_key(connection, account_id, received_at_ms, claim):
                return None
            if not events:
                return 0
            return self._append_batch(connection, account_id, received_at_ms, len(events), record)

        seq = await self._writer.submit(insert, rows=max(1, len(events)))
        if seq and fold_sources is not None and self.decoded_batches is not None:
            self.decoded_batches.put(seq, (events, fold_sources))
        self.wake_waiters()
        return seq is not None

    def forget_idempotency_keys(self, before_ms: int) -> None:
        self._writer.enqueue_quietly(
            lambda connection: connection.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (before_ms,)
            )
        )

    async def backlog(self, now_ms: int) -> FoldLag:
        return await asyncio.to_thread(self.fold_lag, now_ms)

    async def erasure_bound(self) -> int | None:
        return None

    async def connect(self) -> None:
        pass  # the database's connections are made on first use, on their own threads

    async def disconnect(self) -> None:
        pass  # closed by close(), after the last request

    def idempotency_hash(self, account_id: int, key: str) -> bytes | None:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT body_hash FROM idempotency_keys WHERE account_id = ? AND key = ?",
                (account_id, key),
            ).fetchone()
        return bytes(row[0]) if row else None

    # One statement each, so one snapshot: the fold moves events from the log to their
    # rows meanwhile.

    def count_events(self, account_id: int) -> int:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT (SELECT count(*) FROM events WHERE account_id = ?),"
                " (SELECT coalesce(sum(event_count), 0) FROM batches WHERE account_id = ?)",
                (account_id, account_id),
            ).fetchone()
        return int(row[0]) + int(row[1])

    def stored_documents(self, account_id: int) -> list[bytes]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT seq, body, 0 FROM events WHERE account_id = ?"
                " UNION ALL SELECT seq, body, 1 FROM batches WHERE account_id = ?",
                (account_id, account_id),
            ).fetchall()
        documents: list[tuple[int, bytes]] = []
        for seq, body, in_log in rows:
            if not in_log:
                documents.append((seq, bytes(body)))
                continue
            documents += [
                (seq + index, event.document)
                for index, event in enumerate(decode_entries(bytes(body)))
                if isinstance(event, AcceptedEvent)
            ]
        return [document for _, document in sorted(documents)]

    # --- profiles -------------------------------------------------------------------

    def fold(self, step: FoldStep, rows: int = 1) -> int:
        def job(connection: SqlConnection) -> int:
            self._lock_fold_gate(connection, exclusive=False)
            return step(self._fold_transaction(connection, self._fold_cursor))

        return self._run_fold(job, rows)

    def _fold_transaction(
        self, connection: SqlConnection, cursor: QueueCursor
    ) -> SqlFoldTransaction:
        return SqlFoldTransaction(
            connection,
            self._fold_locking,
            cursor,
            current_ms(),
            self._insert_events,
            self.decoded_batches,
        )

    def pending_batches(self, max_events: int) -> list[int]:
        with self._reading() as connection:
            return sql_log.pending_batches(connection, max_events)

    def split_batch(self, seq: int) -> list[int]:
        lock = self._fold_locking.claim_suffix
        split: list[int] = self._run_fold(
            lambda connection: sql_log.split_batch(connection, seq, lock)
        )
        return split

    def quarantine(self, seq: int, error: str) -> None:
        lock = self._fold_locking.claim_suffix
        self._run_fold(
            lambda connection: sql_log.quarantine(connection, seq, error, current_ms(), lock)
        )

    def quarantined(self, limit: int) -> list[QuarantinedEvent]:
        with self._reading() as connection:
            return sql_log.quarantined(connection, limit)

    def release_quarantined(self, seqs: Sequence[int] | None = None) -> int:
        released: int = self._run_fold(
            lambda connection: sql_log.release_quarantined(connection, seqs)
        )
        self.wake_waiters()
        return released

    def database_answers(self) -> bool:
        try:
            with self._reading() as connection:
                connection.execute("SELECT 1").fetchone()
        except Exception:
            return False
        return True

    def wait_for_events(self, timeout: float) -> None:
        """Returns once this process appends (woken at once), once another process's
        append commits (where the fold is not beside the appends: ``_wait_for_commits``),
        or after ``timeout``."""
        if self.appends_wake_the_fold:
            self._new_events.wait(timeout)
        else:
            self._wait_for_commits(timeout)
        self._new_events.clear()

    def _wait_for_commits(self, timeout: float) -> None:
        """Waits for this process's appends or another process's commits, up to
        ``timeout``; a backend that cannot see the others' waits for its own only."""
        self._new_events.wait(timeout)

    def wake_waiters(self) -> None:
        self._new_events.set()

    def find_profile(
        self, account_id: int, kind: str, value: str
    ) -> tuple[int, ProfileState] | None:
        with self._reading() as connection:
            return sql_profiles.find_profile(connection, account_id, kind, value)

    def profile_by_id(self, account_id: int, profile_id: int) -> ProfileState | int | None:
        with self._reading() as connection:
            return sql_profiles.profile_by_id(connection, account_id, profile_id)

    def profiles_after(self, account_id: int, after_id: int, limit: int) -> list[ProfileRow]:
        with self._reading() as connection:
            return sql_profiles.profiles_after(connection, account_id, after_id, limit)

    async def erase_person(
        self,
        account_id: int,
        kind: str,
        value: str,
        fold_everything: FoldStep,
        log_position: int | None = None,
    ) -> None:
        def erase(connection: SqlConnection) -> None:
            self._lock_fold_gate(connection, exclusive=True)
            fold_everything(self._fold_transaction(connection, QueueCursor()))
            erased = sql_profiles.erase_person(connection, account_id, kind, value)
            sql_log.forget_quarantined_of(connection, account_id, erased)
            if log_position is not None:
                sql_logged.mark_erased(connection, account_id, erased, log_position)

        await asyncio.to_thread(self._run_fold, erase)

    def apply_logged(
        self,
        batches: Sequence[LoggedBatch],
        forget_below: int,
        fold: FoldEvents | None = None,
    ) -> int:
        def apply(connection: SqlConnection) -> int:
            # Erasures pass the gate alone: they see none or all of a step's events.
            self._lock_fold_gate(connection, exclusive=False)
            fresh = sql_logged.unapplied(connection, batches)
            erased = sql_logged.erasures_for(connection, fresh)
            kept = [
                (batch, events)
                for batch in fresh
                if (events := self._kept_events(connection, batch, erased))
            ]
            sql_logged.save_marks(connection, erased.learnt)
            sql_logged.record_applied(connection, batches, forget_below)
            if fold is None:
                for batch, events in kept:
                    record = encode_entries(events)
                    self._append_batch(
                        connection, batch.account_id, batch.received_at_ms, len(events), record
                    )
                return 0
            positions = self._allocate_batch_seqs(connection, len(kept))
            pending = [
                event
                for seq, (batch, events) in zip(positions, kept, strict=True)
                for event in pending_items(seq, batch.account_id, batch.received_at_ms, events)
            ]
            return fold(self._fold_transaction(connection, QueueCursor()), pending)

        rows = sum(len(batch.events) for batch in batches)
        return self._run_fold(apply, rows=max(1, rows))

    def _kept_events(
        self, connection: SqlConnection, batch: LoggedBatch, erased: sql_logged.Erasures
    ) -> LogEntries:
        """A logged batch's events (or upserts) to fold: none for a repeat of a batch
        applied before, and never those of people erased after it was logged."""
        if batch.claim is not None:
            try:
                if not claim_key(connection, batch.account_id, batch.received_at_ms, batch.claim):
                    return []  # a repeat of a batch already stored
            except IdempotencyConflict:
                # Its 202 came from an API node that could not see the first use of the
                # key (older than JetStream's duplicate window and not yet applied).
                logger.warning(
                    "dropped logged batch %d: its Idempotency-Key was used with another body",
                    batch.position,
                )
                return []
        kept = [
            event
            for event in batch.events
            if not erased.covers(batch.account_id, event, batch.position)
        ]
        return cast(LogEntries, kept)  # of the batch's one kind

    def list_events(self, query: EventQuery) -> list[StoredEvent]:
        with self._reading() as connection:
            return sql_profiles.list_events(connection, query)

    def event_profiles(self, account_id: int, seqs: Sequence[int]) -> dict[int, int | None]:
        with self._reading() as connection:
            return sql_profiles.event_profiles(connection, account_id, seqs)

    def fold_lag(self, now_ms: int) -> FoldLag:
        with self._reading() as connection:
            return sql_log.fold_lag(connection, now_ms)
