"""A database made by an earlier eventfold keeps working after its schema is upgraded."""

from __future__ import annotations

import sqlite3
from unittest import mock

import msgspec

from eventfold.domain.profile import FoldInput
from eventfold.storage import migrations, sql_profiles
from eventfold.storage.base import EventQuery


def test_events_folded_before_the_identifier_indexes_keep_their_profile() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    before = migrations.SQLITE_MIGRATIONS[:6]  # up to the last one with events.profile_id
    with mock.patch.object(migrations, "SQLITE_MIGRATIONS", before):
        assert migrations.migrate_sqlite(connection) == 6
    connection.execute("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', 0)")
    insert = (
        "INSERT INTO events (seq, account_id, received_at, occurred_at, action, email, phone,"
        " body, profile_id) VALUES (?, 1, 0, 0, 'view', ?, ?, ?, ?)"
    )
    for seq, email, phone, profile in [
        (1, "a@shop.example", None, 7),  # folded into profile 7 by the earlier version
        (2, None, "+359888000001", 7),
        (3, "b@shop.example", None, None),  # not folded yet
    ]:
        body = msgspec.json.encode(FoldInput("view", email=email, phoneNumber=phone))
        connection.execute(insert, (seq, email, phone, body, profile))
    connection.execute("INSERT INTO unfolded (seq) VALUES (3)")
    connection.executemany(
        "INSERT INTO identities (account_id, kind, value, profile_id) VALUES (1, ?, ?, 7)",
        [("email", "a@shop.example"), ("phoneNumber", "+359888000001")],
    )

    assert migrations.migrate_sqlite(connection) == len(migrations.SQLITE_MIGRATIONS)

    person = EventQuery(account_id=1, limit=10, person=("email", "a@shop.example"))
    listed = sql_profiles.list_events(connection, person)
    assert [(event.seq, event.profile_id) for event in listed] == [(2, 7), (1, 7)]
    everyone = sql_profiles.list_events(connection, EventQuery(account_id=1, limit=10))
    assert [(event.seq, event.profile_id) for event in everyone] == [(3, None), (2, 7), (1, 7)]
