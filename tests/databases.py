"""Throw-away databases for tests: a file per test for SQLite, a fresh database per test
on the PostgreSQL server at 127.0.0.1:5432 (skipped when unreachable, failed under CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES_SERVER = os.environ.get("EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = ("sqlite", "postgres")


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'eventfold-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg

    name = f"eventfold_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_SERVER}: {error}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def holding_write_lock(database_url: str) -> Iterator[None]:
    """Another connection holds the lock that storing events needs, until the block ends:
    SQLite's write lock, or PostgreSQL's lock on the events table."""
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
        connection.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()
