"""The PostgreSQL backend: the same contract for several API and worker processes.

psycopg 3, chosen by measurement: with group commit putting ~1,000 events in a
transaction, its COPY stored 139k events/s against asyncpg's 142k (asyncpg led at one
100-event batch per commit, 93k against 69k), and it keeps the writer a plain thread
like SQLite's. Commits wait for the WAL flush (``synchronous_commit = on``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from eventfold.errors import ConfigurationError
from eventfold.storage.group_commit import storage_unavailable
from eventfold.storage.migrations import apply_migrations
from eventfold.storage.schema_postgres import POSTGRES_MIGRATIONS
from eventfold.storage.schema_steps import Statement
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import EVENT_ROW_COLUMNS
from eventfold.storage.sql_fold import FoldLocking
from eventfold.storage.sql_store import Row, SqlStorage

T = TypeVar("T")

# Keys of the advisory locks (the two-number form, a key space apart from the one-number
# form that identifiers use): the fold's gate (folds share it, an erasure takes it
# alone), and one process migrating the schema.
_EVENTFOLD_LOCKS = 0x6576_6E74  # "evnt"
_FOLD_GATE = 1
_MIGRATION_LOCK = 2
_COPY_EVENTS = f"COPY events ({', '.join(EVENT_ROW_COLUMNS)}) FROM STDIN"
# Appends notify this channel (at their commit); a fold in another process listens.
_NEW_BATCHES = "eventfold_batches"


# A database host that silently stops answering (a cut link, a host gone dark) fails a
# connection's wait within about 15 s (a request sent and not acknowledged) or 25 s (an
# idle connection's keepalive probes), instead of the kernel's 15 minutes of
# retransmissions or 2 hours before the first probe. The URL may set its own.
_DEAD_PEER_OPTIONS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}


def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection (transactions are opened explicitly) that waits for the
    WAL flush at every commit, never for a lock more than 5 s, and not long for a
    database host that stopped answering."""
    given = conninfo_to_dict(url)
    options = {key: value for key, value in _DEAD_PEER_OPTIONS.items() if key not in given}
    connection = psycopg.connect(make_conninfo(url, **options), autocommit=True, connect_timeout=5)
    connection.execute("SET synchronous_commit = on")
    connection.execute("SET lock_timeout = '5s'")
    # Plan every statement for its parameters: a generic plan made while a table was
    # still small keeps scanning it whole as it grows (the fold slowed from 3 k to
    # under 1 k events/s over 40 k new people before this).
    connection.execute("SET plan_cache_mode = force_custom_plan")
    return connection


class QmarkConnection:
    """A psycopg connection that takes the shared SQL's ``?`` placeholders."""

    takes_arrays = True  # see sql_profiles.select_in

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(sql.replace("?", "%s"), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(sql.replace("?", "%s"), list(parameters))
        return cursor

    def close(self) -> None:
        self.raw.close()


class PostgresSession:
    """The write connection as the group-commit writer drives it; reconnects when the
    connection was lost, so the server recovers by itself when the database returns."""

    storage_errors: tuple[type[Exception], ...] = (psycopg.OperationalError,)

    def __init__(self, url: str) -> None:
        self._url = url
        self._raw: psycopg.Connection[Any] | None = None

    def connection(self) -> QmarkConnection:
        assert self._raw is not None
        return QmarkConnection(self._raw)

    def execute(self, statement: str) -> None:
        assert self._raw is not None
        self._raw.execute(statement)

    def begin(self) -> None:
        if self._raw is None or self._raw.closed or self._raw.broken:
            self._raw = connect(self._url)
        self._raw.execute("BEGIN")

    def in_transaction(self) -> bool:
        if self.connection_lost():
            return False
        assert self._raw is not None
        return self._raw.info.transaction_status != TransactionStatus.IDLE

    def connection_lost(self) -> bool:
        raw = self._raw
        return raw is None or raw.closed or raw.broken

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()


class PostgresStorage(SqlStorage):
    _read_errors = (psycopg.OperationalError,)

    def __init__(
        self,
        url: str,
        max_pending_events: int = 200_000,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.url = url
        try:
            with connect(url) as connection:
                migrate_postgres(connection)
        except psycopg.OperationalError as error:
            raise ConfigurationError(
                f"cannot reach the PostgreSQL database {_without_password(url)!r} "
                f"({str(error).strip()}); check the URL and that the server runs"
            ) from None
        super().__init__(PostgresSession(url), max_pending_events, on_commit)
        # Folds and erasures run on a connection per calling thread, beside ingest's
        # writer: commits never wait behind a fold step (one shared connection: 3,650 →
        # 10,470 events/s, p99 51 → 36 ms), and several fold threads fold at once.
        self._fold_sessions: dict[threading.Thread, PostgresSession] = {}
        self._fold_sessions_lock = threading.Lock()
        self._listeners = threading.local()  # a LISTENing connection per waiting thread
        self._all_listeners: list[psycopg.Connection[Any]] = []

    def _connect_reader(self) -> SqlConnection:
        return QmarkConnection(connect(self.url))

    def _insert_events(self, connection: SqlConnection, rows: list[Row]) -> None:
        assert isinstance(connection, QmarkConnection)
        with connection.raw.cursor().copy(_COPY_EVENTS) as copy:
            for row in rows:
                copy.write_row(row)

    def _append_batch(
        self,
        connection: SqlConnection,
        account_id: int,
        received_at_ms: int,
        count: int,
        record: bytes,
    ) -> int:
        # The position is the column's default: the sequence batch_seqs, SEQ_STRIDE apart.
        row = connection.execute(
            "INSERT INTO batches (account_id, received_at, event_count, body)"
            " VALUES (?, ?, ?, ?) RETURNING seq",
            (account_id, received_at_ms, count, record),
        ).fetchone()
        # One notification a transaction, however many batches (PostgreSQL folds repeats).
        connection.execute(f"NOTIFY {_NEW_BATCHES}")
        return int(row[0])

    def _wait_for_commits(self, timeout: float) -> None:
        """Another process's appends (for a fold in a child process or an ``eventfold
        worker``) are told by ``NOTIFY`` as they commit."""
        try:
            listener = self._listener()
            for _ in listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:  # the connection is lost: wait as long, unwatched
            with contextlib.suppress(Exception):
                self._listeners.connection.close()
            self._listeners.connection = None
            self._new_events.wait(timeout)

    def _listener(self) -> psycopg.Connection[Any]:
        connection: psycopg.Connection[Any] | None = getattr(self._listeners, "connection", None)
        if connection is None or connection.closed:
            connection = self._listeners.connection = connect(self.url)
            connection.execute(f"LISTEN {_NEW_BATCHES}")
            with self._fold_sessions_lock:  # a lost one is closed: kept only till now
                self._all_listeners = [c for c in self._all_listeners if not c.closed]
                self._all_listeners.append(connection)
        return connection

    def _allocate_batch_seqs(self, connection: SqlConnection, count: int) -> list[int]:
        rows = connection.execute(
            "SELECT nextval('batch_seqs') FROM generate_series(1, ?)", (count,)
        ).fetchall()
        return [row[0] for row in rows]

    _fold_locking = FoldLocking(
        claim_suffix=" FOR UPDATE SKIP LOCKED",
        lock_rows_suffix=" FOR UPDATE",
        allocate_ids=lambda connection, count: _allocate_ids(connection, count),
    )

    def _run_fold(self, job: Callable[[SqlConnection], T], rows: int = 1) -> T:
        session = self._fold_session()
        try:
            session.begin()
            result = job(session.connection())
            session.execute("COMMIT")
        except Exception as error:
            if session.in_transaction():
                session.execute("ROLLBACK")
            if isinstance(error, psycopg.OperationalError):
                raise storage_unavailable(error) from None
            raise
        return result

    def _lock_fold_gate(self, connection: SqlConnection, exclusive: bool) -> None:
        # Held until the transaction ends; a dead process's lock goes with its connection.
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        connection.execute(f"SELECT {function}(?, ?)", (_EVENTFOLD_LOCKS, _FOLD_GATE))

    def _fold_session(self) -> PostgresSession:
        """This thread's fold connection; those of threads that ended are closed."""
        me = threading.current_thread()
        with self._fold_sessions_lock:
            session = self._fold_sessions.get(me)
            if session is None:
                for thread in [t for t in self._fold_sessions if not t.is_alive()]:
                    _close_quietly(self._fold_sessions.pop(thread))
                session = self._fold_sessions[me] = PostgresSession(self.url)
        return session

    def close(self) -> None:
        super().close()
        with self._fold_sessions_lock:
            for session in self._fold_sessions.values():
                _close_quietly(session)
            self._fold_sessions.clear()
            for listener in self._all_listeners:
                with contextlib.suppress(Exception):
                    listener.close()
            self._all_listeners.clear()


def _close_quietly(session: PostgresSession) -> None:
    with contextlib.suppress(Exception):  # a lost connection is closed already
        session.close()


def _allocate_ids(connection: SqlConnection, count: int) -> list[int]:
    rows = connection.execute(
        "SELECT nextval('profile_ids') FROM generate_series(1, ?)", (count,)
    ).fetchall()
    return [row[0] for row in rows]


def migrate_postgres(connection: psycopg.Connection[Any]) -> int:
    """Brings the schema up to date (one process at a time); returns its version."""
    connection.execute("SELECT pg_advisory_lock(%s, %s)", (_EVENTFOLD_LOCKS, _MIGRATION_LOCK))
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        current = (row[0] if row else None) or 0

        def run_step(version: int, statements: list[Statement]) -> None:
            with connection.transaction():
                for statement in statements:
                    if isinstance(statement, str):
                        connection.execute(statement)
                    else:
                        statement(QmarkConnection(connection))
                connection.execute("INSERT INTO schema_version VALUES (%s)", (version,))

        return apply_migrations(POSTGRES_MIGRATIONS, current, run_step)
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s, %s)", (_EVENTFOLD_LOCKS, _MIGRATION_LOCK))


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"
