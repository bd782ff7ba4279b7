"""The segments' change feed in SQL both backends speak: a fold step queues its
membership changes (and, for accounts with webhooks, their messages) in its own
transaction; ``sequence_changes`` then moves committed ones into the feed.

The feed is in commit order: a change gets its feed position only once committed
(``sequence_changes``, under one lock), because PostgreSQL commits sequence numbers out
of order and a reader paging by them could step past a change that commits late.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import msgspec

from eventfold.storage.segment_contract import MembershipChange
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_fold import FoldLocking
from eventfold.storage.sql_profiles import insert_rows, select_in
from eventfold.storage.sql_webhooks import enabled_webhooks, record_segment_change

FEED_COUNTER = "segment_feed_position"  # the last feed position given, in fold_state
_SEQUENCE_AT_ONCE = 2_000  # queue rows (a person's changes in one fold step) at once
# A queued row's changes: [[segment_id, "entered" or "exited", version], ...].
_queued_encoder = msgspec.msgpack.Encoder()
_queued_decoder = msgspec.msgpack.Decoder(list[tuple[int, str, int]])


def queued_changes(changes: Sequence[tuple[int, str, int]]) -> bytes:
    """A queue row's ``changes``: (segment id, "entered" or "exited", version) each."""
    return _queued_encoder.encode(changes)


def record_changes(connection: SqlConnection, changes: Sequence[MembershipChange]) -> None:
    """Queues the changes for the feed, a row per person, and, for accounts with
    webhooks, queues the ``segment.entered`` / ``segment.exited`` messages they ask for
    in this transaction (``storage/sql_webhooks.py``), each named by its change's own
    row in the queue."""
    if not changes:
        return
    if not enabled_webhooks(connection, {c.account_id for c in changes}):
        # A person's changes come one after another: a row for each run of them.
        encode = _queued_encoder.encode
        rows = [
            (*key, encode([(c.segment_id, c.change, c.version) for c in run]))
            for key, run in groupby(changes, key=_person_of)
        ]
        insert_rows(
            connection,
            "segment_change_queue (account_id, profile_id, at, changes)",
            ("bigint", "bigint", "bigint", "bytea"),
            rows,
        )
        return
    keys = dict(
        select_in(
            connection,
            "SELECT id, key FROM segments WHERE id IN ({})",
            (),
            sorted({c.segment_id for c in changes}),
        )
    )
    for change in changes:
        seq = connection.execute(
            "INSERT INTO segment_change_queue (account_id, profile_id, at, changes)"
            " VALUES (?, ?, ?, ?) RETURNING seq",
            (
                change.account_id,
                change.profile_id,
                change.at_ms,
                _queued_encoder.encode([(change.segment_id, change.change, change.version)]),
            ),
        ).fetchone()[0]
        record_segment_change(
            connection,
            change.account_id,
            change.profile_id,
            keys[change.segment_id],
            f"segment.{change.change}",
            seq,
            change.at_ms,
        )


def _person_of(change: MembershipChange) -> tuple[int, int, int]:
    return change.account_id, change.profile_id, change.at_ms


def sequence_changes(connection: SqlConnection, locking: FoldLocking) -> int:
    """Moves the committed changes from their queue into the feed with the next feed
    positions, in the order of their commits (one caller at a time: the counter row is
    locked); returns how many."""
    row = connection.execute(
        "SELECT value FROM fold_state WHERE name = ?" + locking.lock_rows_suffix,
        (FEED_COUNTER,),
    ).fetchone()
    last = int(row[0]) if row else 0
    queued = connection.execute(
        "SELECT seq, account_id, profile_id, at, changes FROM segment_change_queue"
        " ORDER BY seq LIMIT ?",
        (_SEQUENCE_AT_ONCE,),
    ).fetchall()
    if not queued:
        return 0
    rows = [
        (account, segment, profile, change, at, version)
        for _, account, profile, at, found in queued
        for segment, change, version in _queued_decoder.decode(found)
    ]
    insert_rows(
        connection,
        "segment_changes (account_id, segment_id, profile_id, change, at, version, feed_position)",
        ("bigint", "bigint", "bigint", "text", "bigint", "bigint", "bigint"),
        [(*change, last + index) for index, change in enumerate(rows, start=1)],
    )
    select_in(
        connection,
        "DELETE FROM segment_change_queue WHERE seq IN ({}) RETURNING seq",
        (),
        [entry[0] for entry in queued],
    )
    connection.execute(
        "INSERT INTO fold_state (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (FEED_COUNTER, last + len(rows)),
    )
    return len(rows)
