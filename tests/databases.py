"""Throw-away databases for tests: a file per test for SQLite, a fresh database per test
on the PostgreSQL server at 127.0.0.1:5432 (skipped when unreachable, failed under CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bench.processes import PostgresUnreachable, fresh_postgres_database

POSTGRES_SERVER = os.environ.get("EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = ("sqlite", "postgres")


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'eventfold-{uuid.uuid4().hex[:8]}.db'}"
        return
    try:
        with fresh_postgres_database(POSTGRES_SERVER, "eventfold_test") as url:
            yield url
    except PostgresUnreachable as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))


@contextmanager
def holding_write_lock(database_url: str) -> Iterator[None]:
    """Another connection holds the lock that storing events needs, until the block ends:
    SQLite's write lock, or PostgreSQL's lock on the log table (batches)."""
    if database_url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
        )
        connection.execute("BEGIN EXCLUSIVE")
    else:
        import psycopg

        connection = psycopg.connect(database_url, autocommit=True)  # type: ignore[assignment]
        connection.execute("BEGIN")
        connection.execute("LOCK TABLE batches IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()
