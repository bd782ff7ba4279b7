"""Two processes on one SQLite file (``serve`` and its fold's child, or an ``eventfold
worker``): a waiting fold is woken by the other's commit, and a writer takes the lock the
other held once it is released, or answers busy past its timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from eventfold.storage.sqlite import SqliteSession, SqliteStorage, connect


def _commit_later(path: Path, delay: float, hold: float = 0.0) -> threading.Thread:
    """Another connection (as another process would) writes after ``delay``, holding
    the write lock ``hold`` seconds."""

    def write() -> None:
        time.sleep(delay)
        other = connect(path)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO fold_state (name, value) VALUES ('test', 1)")
        time.sleep(hold)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_waiting_fold_is_woken_by_another_connections_commit(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "e.db")
    try:
        started = time.monotonic()
        storage.wait_for_events(0.3)  # nothing written: it waits the whole timeout
        assert time.monotonic() - started >= 0.3
        writer = _commit_later(tmp_path / "e.db", delay=0.2)
        started = time.monotonic()
        storage.wait_for_events(30)
        waited = time.monotonic() - started
        writer.join()
        assert 0.15 <= waited < 10, waited  # woken by the commit, long before 30 s
    finally:
        storage.close()


def test_a_fold_beside_its_appends_waits_for_them_only(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "e.db")
    storage.appends_wake_the_fold = True  # as open_storage sets it for a fold on a thread
    try:
        writer = _commit_later(tmp_path / "e.db", delay=0.05)
        started = time.monotonic()
        storage.wait_for_events(0.5)
        writer.join()
        assert time.monotonic() - started >= 0.5  # another connection's commit is not watched
    finally:
        storage.close()


def test_a_writer_takes_the_lock_once_another_connection_releases_it(tmp_path: Path) -> None:
    SqliteStorage(tmp_path / "e.db").close()  # the schema
    holder = _commit_later(tmp_path / "e.db", delay=0.0, hold=0.5)
    time.sleep(0.1)  # the other connection holds the lock now
    session = SqliteSession(connect(tmp_path / "e.db"), busy_timeout_ms=5_000)
    started = time.monotonic()
    session.begin()
    assert time.monotonic() - started >= 0.2  # it waited for the release
    session.execute("COMMIT")
    holder.join()
    session.close()


def test_a_writer_answers_busy_once_the_lock_is_held_past_its_timeout(tmp_path: Path) -> None:
    SqliteStorage(tmp_path / "e.db").close()
    holder = _commit_later(tmp_path / "e.db", delay=0.0, hold=1.0)
    time.sleep(0.1)
    session = SqliteSession(connect(tmp_path / "e.db"), busy_timeout_ms=100)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        session.begin()
    holder.join()
    session.close()
