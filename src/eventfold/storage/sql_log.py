"""The log of accepted batches in SQL both backends speak (``?`` placeholders): what
the fold has not taken yet, how far behind it is and how much it has folded, splitting
a batch that fails to fold, and the quarantine of events that cannot be folded (kept as
batches of one event, so that a retry puts them back as they were).

Each function runs on a connection the caller owns. Appending is the backend's (how it
numbers a batch: ``SqlBase._append_batch``). Functions that take a batch off the log
take ``lock``, the backend's row lock for claims ("FOR UPDATE SKIP LOCKED" on
PostgreSQL): a batch another fold holds is left to it, never split or set aside under it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Sequence

from eventfold.storage.base import FoldLag, QuarantinedEvent
from eventfold.storage.batch_records import decode_entries, encode_entries
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_logged import identifiers_of_accepted

_MAX_ERROR_LENGTH = 2_000
_RECORD = "seq, account_id, received_at, event_count, body"


def pending_batches(connection: SqlConnection, max_events: int) -> list[int]:
    """The positions of the oldest batches holding up to ``max_events`` (at least one)."""
    rows = connection.execute(
        "SELECT seq, event_count FROM batches ORDER BY seq LIMIT ?", (max_events,)
    ).fetchall()
    return first_holding(rows, max_events)


def first_holding(rows: Iterable[tuple[int, int]], max_events: int) -> list[int]:
    """The positions of the first (position, events) rows that hold up to ``max_events``
    together, at least one."""
    taken: list[int] = []
    events = 0
    for seq, count in rows:
        if taken and events + count > max_events:
            break
        taken.append(seq)
        events += count
    return taken


def split_batch(connection: SqlConnection, seq: int, lock: str) -> list[int]:
    """Replaces the batch at ``seq`` by batches of one event (or upsert) at their
    positions."""
    row = connection.execute(
        "SELECT account_id, received_at, event_count, body FROM batches WHERE seq = ?" + lock,
        (seq,),
    ).fetchone()
    if row is None:
        return []
    account, received_at, count, body = row
    if count == 1:
        return [seq]
    connection.execute("DELETE FROM batches WHERE seq = ?", (seq,))
    entries = decode_entries(bytes(body))
    connection.executemany(
        f"INSERT INTO batches ({_RECORD}) VALUES (?, ?, ?, 1, ?)",
        [
            (seq + index, account, received_at, encode_entries(entries[index : index + 1]))
            for index in range(len(entries))
        ],
    )
    return [seq + index for index in range(len(entries))]


def quarantine(connection: SqlConnection, seq: int, error: str, now_ms: int, lock: str) -> None:
    """Takes the batch (of one event) off the log and sets it aside with the error."""
    if (
        connection.execute("SELECT seq FROM batches WHERE seq = ?" + lock, (seq,)).fetchone()
        is None
    ):
        return  # folded meanwhile, or held by a fold now
    connection.execute(
        f"INSERT INTO quarantined_events ({_RECORD}, error, quarantined_at)"
        f" SELECT {_RECORD}, ?, ? FROM batches WHERE seq = ?"
        " ON CONFLICT (seq) DO UPDATE SET error = excluded.error,"
        " quarantined_at = excluded.quarantined_at",
        (error[:_MAX_ERROR_LENGTH], now_ms, seq),
    )
    connection.execute("DELETE FROM batches WHERE seq = ?", (seq,))


def release_quarantined(connection: SqlConnection, seqs: Sequence[int] | None) -> int:
    """Puts quarantined events (all, or these) back into the log; returns how many."""
    # Always a WHERE: SQLite cannot parse INSERT ... SELECT ... ON CONFLICT without one.
    where, parameters = " WHERE 1 = 1", tuple(seqs or ())
    if seqs is not None:
        where = f" WHERE seq IN ({', '.join('?' * len(seqs))})" if seqs else " WHERE 1 = 0"
    connection.execute(
        f"INSERT INTO batches ({_RECORD}) SELECT {_RECORD} FROM quarantined_events{where}"
        " ON CONFLICT (seq) DO NOTHING",
        parameters,
    )
    released: int = connection.execute(
        f"DELETE FROM quarantined_events{where}", parameters
    ).rowcount
    return released


def quarantined(connection: SqlConnection, limit: int) -> list[QuarantinedEvent]:
    rows = connection.execute(
        "SELECT seq, account_id, error, quarantined_at FROM quarantined_events ORDER BY seq"
        " LIMIT ?",
        (limit,),
    ).fetchall()
    return [QuarantinedEvent(*row) for row in rows]


def forget_quarantined_of(
    connection: SqlConnection, account_id: int, identifiers: set[tuple[str, str]]
) -> None:
    """Drops the account's quarantined events (and upserts) that name any of these
    identifiers (an erasure: they must never come back)."""
    rows = connection.execute(
        "SELECT seq, body FROM quarantined_events WHERE account_id = ?", (account_id,)
    ).fetchall()
    for seq, body in rows:
        entries = decode_entries(bytes(body))
        if any(identifiers.intersection(identifiers_of_accepted(entry)) for entry in entries):
            connection.execute("DELETE FROM quarantined_events WHERE seq = ?", (seq,))


def fold_lag(connection: SqlConnection, now_ms: int) -> FoldLag:
    """Counts the log's events (as long as the backlog, no longer) and the quarantine
    (short)."""
    behind = connection.execute("SELECT coalesce(sum(event_count), 0) FROM batches").fetchone()
    oldest = connection.execute("SELECT received_at FROM batches ORDER BY seq LIMIT 1").fetchone()
    set_aside = connection.execute("SELECT count(*) FROM quarantined_events").fetchone()
    folded = connection.execute("SELECT coalesce(sum(folded), 0) FROM fold_progress").fetchone()
    waited = max(0.0, (now_ms - oldest[0]) / 1000) if oldest else 0.0
    return FoldLag(
        events=int(behind[0]),
        seconds=waited,
        quarantined=int(set_aside[0]),
        folded=int(folded[0]),
    )


def count_folded(connection: SqlConnection, events: int) -> None:
    """Adds ``events`` to this fold loop's count of events folded (in its transaction)."""
    folder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    connection.execute(
        "INSERT INTO fold_progress (folder, folded) VALUES (?, ?) ON CONFLICT (folder)"
        " DO UPDATE SET folded = fold_progress.folded + excluded.folded",
        (folder, events),
    )
