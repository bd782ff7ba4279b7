"""Upgrading a database made before the log of batches: the events the fold had not taken
yet, and the quarantined ones, move into the log at their positions and lose nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg

from eventfold.clock import now_ms
from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldInput
from eventfold.services.fold import FoldService
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import EventQuery, Storage
from eventfold.storage.batch_records import SEQ_STRIDE
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.migrations import statements_of
from eventfold.storage.schema_postgres import POSTGRES_MIGRATIONS
from eventfold.storage.schema_sqlite import SQLITE_MIGRATIONS

# The schema versions just before the log (SQLite 10, PostgreSQL 8 added it).
_BEFORE_THE_LOG = {"sqlite": 9, "postgres": 7}


def _make_old_database(database_url: str, backend: str) -> None:
    """The schema as it was before the log, holding three events of one person: two
    waiting for the fold, one quarantined."""
    if backend == "sqlite":
        connection: Any = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None
        )
        connection.create_function("eventfold_indexed_value", 1, indexed_value)
        steps, placeholder = SQLITE_MIGRATIONS, "?"
    else:
        connection = psycopg.connect(database_url, autocommit=True)
        steps, placeholder = POSTGRES_MIGRATIONS, "%s"
    run: Callable[..., Any] = connection.execute
    run("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, step in enumerate(steps[: _BEFORE_THE_LOG[backend]], 1):
        for statement in statements_of(step):
            run(statement)
        run(f"INSERT INTO schema_version VALUES ({placeholder})", (version,))
    run("INSERT INTO accounts (name, created_at) VALUES ('old', 0)")
    for action in ("view", "buy", "poison"):
        body = msgspec.json.encode(FoldInput(action, email="old@shop.example"))
        run(
            "INSERT INTO events (account_id, received_at, occurred_at, action, email, body)"
            f" VALUES (1, 5, 7, {placeholder}, 'old@shop.example', {placeholder})",
            (action, body),
        )
    if backend == "sqlite":  # PostgreSQL's trigger queued them
        run("INSERT INTO unfolded (seq) SELECT seq FROM events")
    run("DELETE FROM unfolded WHERE seq = 3")
    run(
        "INSERT INTO quarantined_events (seq, account_id, error, quarantined_at)"
        " VALUES (3, 1, 'it failed', 9)"
    )
    connection.close()


def _actions(storage: Storage) -> list[str]:
    listed = storage.list_events(EventQuery(account_id=1, limit=10, ascending=True))
    return [msgspec.json.decode(event.document)["action"] for event in listed]


def test_queued_and_quarantined_events_move_into_the_log(database_url: str) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    _make_old_database(database_url, backend)
    storage = open_storage(Settings(database_url=database_url))
    try:
        assert storage.count_events(1) == 2  # in the log now; the quarantined one aside
        assert FoldService(storage).fold_pending(100) == 2
        assert _actions(storage) == ["view", "buy"]
        listed = storage.list_events(EventQuery(account_id=1, limit=10, ascending=True))
        assert [event.seq for event in listed] == [1, 2]  # their positions kept
        assert [(q.seq, q.error) for q in storage.quarantined(10)] == [(3, "it failed")]
        assert storage.release_quarantined() == 1
        assert FoldService(storage).fold_pending(100) == 1
        assert _actions(storage) == ["view", "buy", "poison"]
        found = storage.find_profile(1, "email", "old@shop.example")
        assert found is not None
        assert found[1].event_count == 3
        # New batches go after every old position (SEQ_STRIDE above the highest).
        later = AcceptedEvent(7, "later", "old@shop.example", None, None, b'{"action":"later"}')
        asyncio.run(storage.append(1, now_ms(), [later]))
        assert FoldService(storage).fold_pending(100) == 1
        listed = storage.list_events(EventQuery(account_id=1, limit=10, ascending=True))
        assert _actions(storage)[-1] == "later"
        assert listed[-1].seq >= SEQ_STRIDE + 3
    finally:
        storage.close()
