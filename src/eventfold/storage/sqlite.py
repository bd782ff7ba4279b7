"""The embedded backend: one SQLite file in WAL mode with ``synchronous=FULL``.

Writes go through the group-commit writer thread; reads use one connection per thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from eventfold.clock import now_ms as current_ms
from eventfold.domain.events import AcceptedEvent
from eventfold.domain.keys import generate_key_id, generate_secret, hash_secret
from eventfold.domain.profile import ProfileState
from eventfold.errors import ConfigurationError, IdempotencyConflict
from eventfold.storage import sql_profiles
from eventfold.storage.base import (
    EventQuery,
    FoldLag,
    IdempotencyClaim,
    KeyRecord,
    Principal,
    StoredEvent,
)
from eventfold.storage.group_commit import GroupCommitWriter
from eventfold.storage.migrations import migrate_sqlite

_INSERT_EVENT = (
    "INSERT INTO events (account_id, received_at, occurred_at, action, email, phone,"
    " profile_ref, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def connect(path: Path, busy_timeout_ms: int = 5_000) -> sqlite3.Connection:
    """A connection with the durability and concurrency settings every one must have."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    connection.execute("PRAGMA journal_mode = WAL")
    # FULL: the WAL is fsynced at every commit, so a 202 survives a power cut.
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


class SqliteSession:
    """The write connection as the group-commit writer drives it."""

    storage_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def connection(self) -> sqlite3.Connection:
        return self._connection

    def execute(self, statement: str) -> None:
        self._connection.execute(statement)

    def begin(self) -> None:
        # IMMEDIATE: take the write lock now, not at the first write.
        self._connection.execute("BEGIN IMMEDIATE")

    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def close(self) -> None:
        self._connection.close()


def _claim_key(
    connection: sqlite3.Connection, account_id: int, now_ms: int, claim: IdempotencyClaim
) -> bool:
    """True if the batch is new; False if it repeats a batch stored under the same key.

    Runs in the writer's transaction, so a repeat that arrives while the first request
    is still in flight is serialised behind it and sees its row.
    """
    row = connection.execute(
        "SELECT body_hash, created_at FROM idempotency_keys WHERE account_id = ? AND key = ?",
        (account_id, claim.key),
    ).fetchone()
    if row is not None and row[1] >= claim.not_before_ms:
        if bytes(row[0]) == claim.body_hash:
            return False
        raise IdempotencyConflict(
            f"the Idempotency-Key {claim.key[:80]!r} was already used with a different body; "
            "use a new key for a new batch"
        )
    connection.execute(
        "INSERT INTO idempotency_keys (account_id, key, body_hash, created_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (account_id, key) DO UPDATE"
        " SET body_hash = excluded.body_hash, created_at = excluded.created_at",
        (account_id, claim.key, claim.body_hash, now_ms),
    )
    return True


class SqliteStorage:
    """Keys, accounts and the event log in one SQLite file."""

    def __init__(
        self,
        path: Path,
        max_pending_events: int = 200_000,
        busy_timeout_ms: int = 5_000,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        try:
            write_connection = connect(path, busy_timeout_ms)
            migrate_sqlite(write_connection)
        except sqlite3.Error as error:
            raise ConfigurationError(
                f"cannot open the SQLite database {str(path)!r} ({error}); check that its "
                "folder exists and is writable"
            ) from None
        self._writer = GroupCommitWriter(
            SqliteSession(write_connection), max_pending_events, on_commit
        )
        self._readers = threading.local()
        self._new_events = threading.Event()

    def close(self) -> None:
        self._writer.close()

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            connection = connect(self.path, self._busy_timeout_ms)
            self._readers.connection = connection
        return connection

    # --- keys -----------------------------------------------------------------------

    def create_key(
        self, account_name: str, now_ms: int, rate_limit: float | None = None
    ) -> tuple[KeyRecord, str]:
        secret, key_id = generate_secret(), generate_key_id()

        def insert(connection: sqlite3.Connection) -> None:
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
        def update(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE api_keys SET rate_limit = ? WHERE id = ?", (rate_limit, key_id)
            )
            return cursor.rowcount > 0

        return self._writer.run(update)

    def list_keys(self) -> list[KeyRecord]:
        rows = self._reader().execute(
            "SELECT k.id, a.name, k.created_at, k.last_used_at, k.revoked_at, k.rate_limit"
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.created_at, k.id"
        )
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        def revoke(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (now_ms, key_id),
            )
            return cursor.rowcount > 0

        return self._writer.run(revoke)

    def find_key(self, secret_hash: bytes) -> Principal | None:
        row = (
            self._reader()
            .execute(
                "SELECT k.id, a.id, a.name, k.rate_limit"
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                " WHERE k.secret_hash = ? AND k.revoked_at IS NULL",
                (secret_hash,),
            )
            .fetchone()
        )
        return Principal(*row) if row else None

    def touch_key(self, key_id: str, now_ms: int) -> None:
        def touch(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?",
                (now_ms, key_id),
            )

        # Fire and forget: a missed "last used" time must never fail a request.
        self._writer.enqueue_quietly(touch)

    def has_keys(self) -> bool:
        return self._reader().execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    # --- events ---------------------------------------------------------------------

    async def append(
        self,
        account_id: int,
        received_at_ms: int,
        events: Sequence[AcceptedEvent],
        claim: IdempotencyClaim | None = None,
    ) -> bool:
        rows = [(account_id, received_at_ms, *event) for event in events]

        def insert(connection: sqlite3.Connection) -> bool:
            if claim is not None and not _claim_key(connection, account_id, received_at_ms, claim):
                return False
            connection.executemany(_INSERT_EVENT, rows)
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

    def count_events(self, account_id: int) -> int:
        row = (
            self._reader()
            .execute("SELECT count(*) FROM events WHERE account_id = ?", (account_id,))
            .fetchone()
        )
        return int(row[0])

    def stored_documents(self, account_id: int) -> list[bytes]:
        rows = self._reader().execute(
            "SELECT body FROM events WHERE account_id = ? ORDER BY seq", (account_id,)
        )
        return [bytes(row[0]) for row in rows]

    # --- profiles -------------------------------------------------------------------

    def fold_pending(self, max_events: int) -> int:
        return self._writer.run(
            lambda connection: sql_profiles.fold_pending(connection, max_events, current_ms())
        )

    def wait_for_events(self, timeout: float) -> None:
        self._new_events.wait(timeout)
        self._new_events.clear()

    def wake_waiters(self) -> None:
        self._new_events.set()

    def find_profile(
        self, account_id: int, kind: str, value: str
    ) -> tuple[int, ProfileState] | None:
        return sql_profiles.find_profile(self._reader(), account_id, kind, value)

    async def erase_person(self, account_id: int, kind: str, value: str) -> None:
        await self._writer.submit(
            lambda connection: sql_profiles.erase_person(
                connection, account_id, kind, value, current_ms()
            )
        )

    def list_events(self, query: EventQuery) -> list[StoredEvent]:
        return sql_profiles.list_events(self._reader(), query)

    def event_profiles(self, account_id: int, seqs: Sequence[int]) -> dict[int, int | None]:
        return sql_profiles.event_profiles(self._reader(), account_id, seqs)

    def fold_lag(self, now_ms: int) -> FoldLag:
        return sql_profiles.fold_lag(self._reader(), now_ms)
