"""Upgrading a database made before the queue of membership changes: changes the feed
had not numbered yet move into the queue and reach the feed after those it numbered,
and the queue's numbers go on after theirs (webhook messages are named by them); and
leaf states stored before the sparse record are read as they are."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg

from eventfold.domain.segments.evaluate import LeafState
from eventfold.domain.segments.program import PersonLeaves, fingerprints_of
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.migrations import statements_of
from eventfold.storage.postgres import QmarkConnection
from eventfold.storage.schema_postgres import POSTGRES_MIGRATIONS
from eventfold.storage.schema_sqlite import SQLITE_MIGRATIONS
from eventfold.storage.segment_contract import PersonVerdict

# The schema versions just before the queue (SQLite 14, PostgreSQL 12 added it).
_BEFORE_THE_QUEUE = {"sqlite": 13, "postgres": 11}


def _connect(database_url: str, backend: str) -> tuple[Any, str]:
    if backend == "sqlite":
        connection: Any = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None
        )
        connection.create_function("eventfold_indexed_value", 1, indexed_value)
        return connection, "?"
    return psycopg.connect(database_url, autocommit=True), "%s"


def _make_old_database(database_url: str, backend: str) -> None:
    """The schema before the queue, with one segment and three changes: the first
    numbered in the feed, the next two not yet."""
    connection, placeholder = _connect(database_url, backend)
    steps = SQLITE_MIGRATIONS if backend == "sqlite" else POSTGRES_MIGRATIONS
    run: Callable[..., Any] = connection.execute
    run("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, step in enumerate(steps[: _BEFORE_THE_QUEUE[backend]], 1):
        for statement in statements_of(step):
            if isinstance(statement, str):
                run(statement)
            else:
                statement(connection if backend == "sqlite" else QmarkConnection(connection))
        run(f"INSERT INTO schema_version VALUES ({placeholder})", (version,))
    run("INSERT INTO accounts (name, created_at) VALUES ('old', 0)")
    run(
        "INSERT INTO segments (account_id, key, name, definition, version, status, created_at,"
        " updated_at, backfill_after) VALUES (1, 'vip', 'VIP', '{}', 1, 'ready', 0, 0, 0)"
    )
    for seq, profile, change, position in ((1, 7, "entered", 1), (2, 8, "entered", None)):
        run(
            "INSERT INTO segment_changes (seq, account_id, segment_id, profile_id, change, at,"
            f" version, feed_position) VALUES ({placeholder}, 1, 1, {placeholder},"
            f" {placeholder}, 5, 1, {placeholder})",
            (seq, profile, change, position),
        )
    run(
        "INSERT INTO segment_changes (seq, account_id, segment_id, profile_id, change, at,"
        " version) VALUES (3, 1, 1, 7, 'exited', 6, 1)"
    )
    run("UPDATE fold_state SET value = 1 WHERE name = 'segment_feed_position'")
    connection.close()


def test_unnumbered_changes_move_into_the_queue_and_keep_their_order(database_url: str) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    _make_old_database(database_url, backend)
    storage = open_storage(Settings(database_url=database_url, fold_in_server=False))
    try:
        feed = storage.segment_changes(1, 0, 10)
        assert [(e.position, e.profile_id, e.change, e.at_ms) for e in feed] == [
            (1, 7, "entered", 5),
            (2, 8, "entered", 5),
            (3, 7, "exited", 6),
        ]
    finally:
        storage.close()
    connection, _ = _connect(database_url, backend)
    try:
        row = connection.execute(
            "INSERT INTO segment_change_queue (account_id, profile_id, at, changes)"
            " VALUES (1, 9, 7, 'x') RETURNING seq"
        ).fetchone()
        assert row[0] > 3
    finally:
        connection.close()


def test_leaf_states_stored_before_the_sparse_record_are_read_as_they_are(
    database_url: str,
) -> None:
    storage = open_storage(Settings(database_url=database_url, fold_in_server=False))
    try:
        earlier = msgspec.msgpack.encode(
            {"00112233aabbccdd": LeafState(), "0011223344556677": LeafState(2, 5)}
        )
        storage.segments_transaction(
            lambda records: records.save([PersonVerdict(7, 1, PersonLeaves(), None)], [], [])
        )
        backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
        connection, placeholder = _connect(database_url, backend)  # as the code before wrote it
        connection.execute(
            f"UPDATE segment_people SET leaves = {placeholder} WHERE profile_id = 7", (earlier,)
        )
        connection.close()
        found = storage.segments_transaction(lambda records: records.segment_people([7]))
        leaves, _ = found[7]
        assert leaves.states == {"0011223344556677": LeafState(2, 5)}
        assert fingerprints_of(leaves.known) == {"00112233aabbccdd", "0011223344556677"}
    finally:
        storage.close()
