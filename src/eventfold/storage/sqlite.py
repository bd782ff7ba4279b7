"""The embedded backend: one SQLite file in WAL mode with ``synchronous=FULL``.

Writes go through the group-commit writer thread (SQLite allows one writer, so fold
steps never overlap); reads use one connection per thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from eventfold.errors import ConfigurationError, StorageUnavailable
from eventfold.storage.batch_records import SEQ_STRIDE
from eventfold.storage.migrations import migrate_sqlite
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_store import SqlStorage

# How often a waiting fold looks for commits by other processes, and how often a writer
# tries again for the write lock another process holds.
WAKE_POLL_SECONDS = 0.005
LOCK_POLL_SECONDS = 0.0005
# The write connection's page cache. SQLite's default (2 MiB) is smaller than what one
# fold step dirties (about 2,000 profiles' rows, the events' rows and their indexes'
# pages), so pages spilled to the WAL mid-step and were read back; measured with
# ``bench.fold_inprocess sqlite 40000 10000 1``: 6-10 % less CPU an event with 64 MiB
# (docs/performance.md). It is allocated as pages are used, up to this size.
WRITER_CACHE_KIB = 65_536


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

    def __init__(self, connection: sqlite3.Connection, busy_timeout_ms: int = 5_000) -> None:
        self._connection = connection
        self._busy_timeout_s = busy_timeout_ms / 1000
        # This connection waits for the write lock in ``begin``, not in SQLite's busy
        # handler, whose sleeps grow to 100 ms: with the fold in another process (a
        # child of ``serve``, or ``eventfold worker``), the two writers missed each
        # other's commits by that much (measured at 12,500 events/s: request p99 572
        # and 618 ms, against 175 and 274 ms polling; docs/performance.md).
        connection.execute("PRAGMA busy_timeout = 0")
        connection.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")

    def connection(self) -> sqlite3.Connection:
        return self._connection

    def execute(self, statement: str) -> None:
        self._connection.execute(statement)

    def begin(self) -> None:
        """Takes the write lock (IMMEDIATE: now, not at the first write), trying again
        every ``LOCK_POLL_SECONDS`` while another process holds it, for up to the busy
        timeout."""
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # or BUSY_RECOVERY, ...
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_POLL_SECONDS)

    def in_transaction(self) -> bool:
        return self._connection.in_transaction

    def connection_lost(self) -> bool:
        return False  # a local file: a failed COMMIT is rolled back from the WAL

    def close(self) -> None:
        self._connection.close()


class SqliteStorage(SqlStorage):
    """Keys, accounts, the event log and profiles in one SQLite file."""

    _read_errors = (sqlite3.OperationalError,)

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
        super().__init__(
            SqliteSession(write_connection, busy_timeout_ms), max_pending_events, on_commit
        )

    def _connect_reader(self) -> SqlConnection:
        return connect(self.path, self._busy_timeout_ms)

    def _wait_for_commits(self, timeout: float) -> None:
        """Another process's commits to the file (the server's appends, for a fold in a
        child process or an ``eventfold worker``) are seen within ``WAKE_POLL_SECONDS``
        by ``PRAGMA data_version``, which reads shared memory only."""
        deadline = time.monotonic() + timeout
        try:
            with self._reading() as connection:
                version = _data_version(connection)
                while not self._new_events.wait(WAKE_POLL_SECONDS):
                    if _data_version(connection) != version or time.monotonic() >= deadline:
                        break
        except StorageUnavailable:  # the file cannot be read: wait as long, unwatched
            self._new_events.wait(max(0.0, deadline - time.monotonic()))

    def _append_batch(
        self,
        connection: SqlConnection,
        account_id: int,
        received_at_ms: int,
        count: int,
        record: bytes,
    ) -> int:
        # One writer: the next position is SEQ_STRIDE above the highest ever given
        # (AUTOINCREMENT records it in sqlite_sequence, even once that batch is folded).
        row = connection.execute(
            "INSERT INTO batches (seq, account_id, received_at, event_count, body) VALUES"
            " ((SELECT seq FROM sqlite_sequence WHERE name = 'batches') + ?, ?, ?, ?, ?)"
            " RETURNING seq",
            (SEQ_STRIDE, account_id, received_at_ms, count, record),
        ).fetchone()
        return int(row[0])

    def _allocate_batch_seqs(self, connection: SqlConnection, count: int) -> list[int]:
        row = connection.execute(
            "UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'batches' RETURNING seq",
            (SEQ_STRIDE * count,),
        ).fetchone()
        last = int(row[0])
        return [last - SEQ_STRIDE * (count - 1 - index) for index in range(count)]


def _data_version(connection: SqlConnection) -> int:
    return int(connection.execute("PRAGMA data_version").fetchone()[0])
