"""``SqlStorage``: the storage contract in SQL both backends speak (``?`` placeholders).

A backend subclass says how to reach its database (a write session for the group-commit
writer, reader connections), how to insert a batch's rows fastest, how fold steps are
kept from running twice at once, and which of its errors mean "unavailable".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from eventfold.clock import now_ms as current_ms
from eventfold.domain.events import AcceptedEvent
from eventfold.domain.keys import generate_key_id, generate_secret, hash_secret
from eventfold.domain.profile import ProfileState
from eventfold.errors import IdempotencyConflict
from eventfold.storage import sql_logged, sql_profiles
from eventfold.storage.base import (
    EventQuery,
    FoldLag,
    FoldStep,
    IdempotencyClaim,
    KeyRecord,
    LoggedBatch,
    Principal,
    QuarantinedEvent,
    StoredEvent,
)
from eventfold.storage.group_commit import GroupCommitWriter, WriteSession, storage_unavailable
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_fold import FoldLocking, QueueCursor, SqlFoldTransaction

EVENT_COLUMNS = (
    "account_id",
    "received_at",
    "occurred_at",
    "action",
    "email",
    "phone",
    "profile_ref",
    "body",
)
Row = tuple[Any, ...]
T = TypeVar("T")
# How long reads fail at once after the database did not answer one.
_RECONNECT_PAUSE_SECONDS = 1.0
logger = logging.getLogger("eventfold.storage")


class SqlStorage:
    """Keys, accounts, the event log and profiles, over a group-commit writer."""

    def __init__(
        self,
        session: WriteSession,
        max_pending_events: int,
        on_commit: Callable[[int, float], None] | None,
    ) -> None:
        self._writer = GroupCommitWriter(session, max_pending_events, on_commit)
        self._readers = threading.local()
        self._all_readers: list[SqlConnection] = []
        self._readers_lock = threading.Lock()
        self._unreachable_until = 0.0
        self._unreachable_because: Exception = ConnectionError("not connected yet")
        self._new_events = threading.Event()
        # Late commits (PostgreSQL) wait at most this long plus a step to be folded.
        self._fold_cursor = QueueCursor(rescan_seconds=1.0)

    # --- what a backend provides ----------------------------------------------------

    def _connect_reader(self) -> SqlConnection:
        raise NotImplementedError

    def _insert_events(self, connection: SqlConnection, rows: list[Row]) -> None:
        connection.executemany(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    # How concurrent folds are kept apart: nothing where write transactions exclude
    # each other (SQLite).
    _fold_locking = FoldLocking()

    def _run_fold(self, job: Callable[[SqlConnection], T], rows: int = 1) -> T:
        """Runs a fold, erasure or quarantine job in a transaction of its own and
        commits: on the one writer here (SQLite)."""
        return self._writer.run(job, rows)

    def _lock_fold_gate(self, connection: SqlConnection, exclusive: bool) -> None:
        """Folds pass the gate together; an erasure passes it alone (waiting for the
        folds in flight), so it sees every accepted event folded or none of a step's."""

    _read_errors: tuple[type[Exception], ...] = ()

    # --- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Commits what is queued, then closes the writer's and the readers' connections."""
        self._writer.close()
        with self._readers_lock:
            for connection in self._all_readers:
                with contextlib.suppress(Exception):  # a lost connection is closed already
                    connection.close()
            self._all_readers.clear()

    @contextmanager
    def _reading(self) -> Iterator[SqlConnection]:
        """This thread's reader connection; a lost one is dropped and the read is a 503."""
        connection: SqlConnection | None = getattr(self._readers, "connection", None)
        if connection is None:
            if time.monotonic() < self._unreachable_until:
                raise storage_unavailable(self._unreachable_because)
            try:
                connection = self._connect_reader()
            except self._read_errors as error:
                self._note_unreachable(error)
                raise storage_unavailable(error) from None
            self._readers.connection = connection
            with self._readers_lock:
                self._all_readers.append(connection)
        try:
            yield connection
        except self._read_errors as error:
            self._readers.connection = None
            self._note_unreachable(error)
            raise storage_unavailable(error) from None

    def _note_unreachable(self, error: Exception) -> None:
        """After a failed read, new reader connections are not tried for a moment: with
        the database down, requests fail at once instead of each waiting out a connect
        timeout (5 s on PostgreSQL)."""
        self._unreachable_because = error
        self._unreachable_until = time.monotonic() + _RECONNECT_PAUSE_SECONDS

    # --- keys -----------------------------------------------------------------------

    def create_key(
        self, account_name: str, now_ms: int, rate_limit: float | None = None
    ) -> tuple[KeyRecord, str]:
        secret, key_id = generate_secret(), generate_key_id()

        def insert(connection: SqlConnection) -> None:
            connection.execute(
                "INSERT INTO accounts (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (account_name, now_ms),
            )
            connection.execute(
                "INSERT INTO api_keys (id, account_id, secret_hash, created_at, rate_limit)"
                " SELECT ?, id, ?, ?, ? FROM accounts WHERE name = ?",
                (key_id, hash_secret(secret), now_ms, rate_limit, account_name),
            )

        self._writer.run(insert)
        return KeyRecord(key_id, account_name, now_ms, None, None, rate_limit), secret

    def set_rate_limit(self, key_id: str, rate_limit: float | None) -> bool:
        return self._changed(
            "UPDATE api_keys SET rate_limit = ? WHERE id = ?", (rate_limit, key_id)
        )

    def list_keys(self) -> list[KeyRecord]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT k.id, a.name, k.created_at, k.last_used_at, k.revoked_at, k.rate_limit"
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                " ORDER BY k.created_at, k.id"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        return self._changed(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
            (now_ms, key_id),
        )

    def _changed(self, statement: str, parameters: tuple[Any, ...]) -> bool:
        """Runs one write; whether it changed a row."""
        rowcount: int = self._writer.run(
            lambda connection: connection.execute(statement, parameters).rowcount
        )
        return rowcount > 0

    def find_key(self, secret_hash: bytes) -> Principal | None:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT k.id, a.id, a.name, k.rate_limit"
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                " WHERE k.secret_hash = ? AND k.revoked_at IS NULL",
                (secret_hash,),
            ).fetchone()
        return Principal(*row) if row else None

    def touch_key(self, key_id: str, now_ms: int) -> None:
        # Fire and forget: a missed "last used" time must never fail a request.
        self._writer.enqueue_quietly(
            lambda connection: connection.execute(
                "UPDATE api_keys SET last_used_at = ?"
                " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                (now_ms, key_id, now_ms),
            )
        )

    def has_keys(self) -> bool:
        with self._reading() as connection:
            return connection.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    # --- events ---------------------------------------------------------------------

    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: Sequence[AcceptedEvent],
        claim: IdempotencyClaim | None = None,
    ) -> bool:
        rows = [(account_id, received_at_ms, *event) for event in events]

        def insert(connection: SqlConnection) -> bool:
            if claim is not None and not _claim_key(connection, account_id, received_at_ms, claim):
                return False
            if rows:
                self._insert_events(connection, rows)
            return True

        stored = await self._writer.submit(insert, rows=max(1, len(rows)))
        self.wake_waiters()
        return stored

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

    def count_events(self, account_id: int) -> int:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT count(*) FROM events WHERE account_id = ?", (account_id,)
            ).fetchone()
        return int(row[0])

    def stored_documents(self, account_id: int) -> list[bytes]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT body FROM events WHERE account_id = ? ORDER BY seq", (account_id,)
            ).fetchall()
        return [bytes(row[0]) for row in rows]

    # --- profiles -------------------------------------------------------------------

    def fold(self, step: FoldStep, rows: int = 1) -> int:
        def job(connection: SqlConnection) -> int:
            self._lock_fold_gate(connection, exclusive=False)
            return step(self._fold_transaction(connection, self._fold_cursor))

        return self._run_fold(job, rows)

    def _fold_transaction(
        self, connection: SqlConnection, cursor: QueueCursor
    ) -> SqlFoldTransaction:
        return SqlFoldTransaction(connection, self._fold_locking, cursor, current_ms())

    def pending_events(self, max_events: int) -> list[int]:
        with self._reading() as connection:
            return sql_profiles.pending_events(connection, max_events)

    def quarantine(self, seq: int, error: str) -> None:
        self._run_fold(
            lambda connection: sql_profiles.quarantine(connection, seq, error, current_ms())
        )

    def quarantined(self, limit: int) -> list[QuarantinedEvent]:
        with self._reading() as connection:
            return sql_profiles.quarantined(connection, limit)

    def release_quarantined(self, seqs: Sequence[int] | None = None) -> int:
        released: int = self._run_fold(
            lambda connection: sql_profiles.release_quarantined(connection, seqs)
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
        self._new_events.wait(timeout)
        self._new_events.clear()

    def wake_waiters(self) -> None:
        self._new_events.set()

    def find_profile(
        self, account_id: int, kind: str, value: str
    ) -> tuple[int, ProfileState] | None:
        with self._reading() as connection:
            return sql_profiles.find_profile(connection, account_id, kind, value)

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
            if log_position is not None:
                sql_logged.mark_erased(connection, account_id, erased, log_position)

        await asyncio.to_thread(self._run_fold, erase)

    def apply_logged(
        self,
        batches: Sequence[LoggedBatch],
        forget_below: int,
        fold_everything: FoldStep | None = None,
    ) -> int:
        def apply(connection: SqlConnection) -> int:
            # Erasures pass the gate alone: they see none or all of a step's events.
            self._lock_fold_gate(connection, exclusive=False)
            fresh = sql_logged.unapplied(connection, batches)
            erased = sql_logged.erasures_for(connection, fresh)
            for batch in fresh:
                self._store_logged(connection, batch, erased)
            sql_logged.save_marks(connection, erased.learnt)
            sql_logged.record_applied(connection, batches, forget_below)
            if fold_everything is None:
                return 0
            return fold_everything(self._fold_transaction(connection, QueueCursor()))

        rows = sum(len(batch.events) for batch in batches)
        return self._run_fold(apply, rows=max(1, rows))

    def _store_logged(
        self, connection: SqlConnection, batch: LoggedBatch, erased: sql_logged.Erasures
    ) -> None:
        """Stores one logged batch, less the events of people erased after it was logged."""
        if batch.claim is not None:
            try:
                if not _claim_key(connection, batch.account_id, batch.received_at_ms, batch.claim):
                    return  # a repeat of a batch already stored
            except IdempotencyConflict:
                # Its 202 came from an API node that could not see the first use of the
                # key (older than JetStream's duplicate window and not yet applied).
                logger.warning(
                    "dropped logged batch %d: its Idempotency-Key was used with another body",
                    batch.position,
                )
                return
        rows = [
            (batch.account_id, batch.received_at_ms, *event)
            for event in batch.events
            if not erased.covers(batch.account_id, event, batch.position)
        ]
        if rows:
            self._insert_events(connection, rows)

    def list_events(self, query: EventQuery) -> list[StoredEvent]:
        with self._reading() as connection:
            return sql_profiles.list_events(connection, query)

    def event_profiles(self, account_id: int, seqs: Sequence[int]) -> dict[int, int | None]:
        with self._reading() as connection:
            return sql_profiles.event_profiles(connection, account_id, seqs)

    def fold_lag(self, now_ms: int) -> FoldLag:
        with self._reading() as connection:
            return sql_profiles.fold_lag(connection, now_ms)


def _claim_key(
    connection: SqlConnection, account_id: int, now_ms: int, claim: IdempotencyClaim
) -> bool:
    """True if the batch is new; False if it repeats a batch stored under the same key.

    Runs in the writer's transaction. A repeat racing the first request waits behind it
    (SQLite's single writer; PostgreSQL's insert waits for the other transaction) and
    then sees its row.
    """
    inserted = connection.execute(
        "INSERT INTO idempotency_keys (account_id, key, body_hash, created_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (account_id, key) DO NOTHING",
        (account_id, claim.key, claim.body_hash, now_ms),
    ).rowcount
    if inserted == 1:
        return True
    renewed = connection.execute(  # an expired key is free again
        "UPDATE idempotency_keys SET body_hash = ?, created_at = ?"
        " WHERE account_id = ? AND key = ? AND created_at < ?",
        (claim.body_hash, now_ms, account_id, claim.key, claim.not_before_ms),
    ).rowcount
    if renewed == 1:
        return True
    row = connection.execute(
        "SELECT body_hash FROM idempotency_keys WHERE account_id = ? AND key = ?",
        (account_id, claim.key),
    ).fetchone()
    if bytes(row[0]) == claim.body_hash:
        return False
    raise IdempotencyConflict(
        f"the Idempotency-Key {claim.key[:80]!r} was already used with a different body; "
        "use a new key for a new batch"
    )
