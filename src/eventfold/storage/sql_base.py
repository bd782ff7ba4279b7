"""``SqlBase``: what every part of the SQL storage shares (``?`` placeholders): the
group-commit writer, reader connections per thread, and the hooks a backend fills in.

A backend subclass says how to reach its database (a write session for the group-commit
writer, reader connections), how to insert a batch's rows fastest, how concurrent folds
are kept apart, and which of its errors mean "unavailable".
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from eventfold.storage.decoded_batches import DecodedBatches
from eventfold.storage.group_commit import GroupCommitWriter, WriteSession, storage_unavailable
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_fold import FoldLocking, QueueCursor

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
# An event's row as the fold writes it.
EVENT_ROW_COLUMNS = ("seq", *EVENT_COLUMNS, "profile_id")
Row = tuple[Any, ...]
T = TypeVar("T")
# How long reads fail at once after the database did not answer one.
_RECONNECT_PAUSE_SECONDS = 1.0


class SqlBase:
    """The connections and hooks of the SQL storage; ``SqlStorage`` adds the contract."""

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
        # Set where the fold runs on a thread of the process that appends (open_storage):
        # appended batches are handed to it as validated, and the appends' wake-up is
        # all its waits need (a fold in another process watches the database instead).
        self.decoded_batches: DecodedBatches | None = None
        self.appends_wake_the_fold = False

    # --- what a backend provides ----------------------------------------------------

    def _connect_reader(self) -> SqlConnection:
        raise NotImplementedError

    def _insert_events(self, connection: SqlConnection, rows: list[Row]) -> None:
        """Inserts events' rows (``EVENT_ROW_COLUMNS``)."""
        connection.executemany(
            f"INSERT INTO events ({', '.join(EVENT_ROW_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(EVENT_ROW_COLUMNS))})",
            rows,
        )

    def _append_batch(
        self,
        connection: SqlConnection,
        account_id: int,
        received_at_ms: int,
        count: int,
        record: bytes,
    ) -> int:
        """Appends a batch's record to the log at the next free position; returns it."""
        raise NotImplementedError

    def _allocate_batch_seqs(self, connection: SqlConnection, count: int) -> list[int]:
        """Positions for ``count`` batches that never get a row in the log (folded as
        they come from an external one)."""
        raise NotImplementedError

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

    def _changed(self, statement: str, parameters: tuple[Any, ...]) -> bool:
        """Runs one write; whether it changed a row."""
        rowcount: int = self._writer.run(
            lambda connection: connection.execute(statement, parameters).rowcount
        )
        return rowcount > 0
