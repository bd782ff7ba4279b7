"""Profiles and events in SQL that SQLite and PostgreSQL both speak (``?``
placeholders; the PostgreSQL connection translates them): read-back, erasure and the
helpers the fold's transaction (``sql_fold``) shares.

Each function runs on a connection the caller owns. The events' rows are written by the
fold, with the profile each event joined; until then an event is in the log
(``sql_log``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from eventfold.clock import now_ms
from eventfold.domain.profile import ProfileState
from eventfold.domain.profile_book import IdentityKey
from eventfold.storage.base import EventQuery, ProfileRow, StoredEvent
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.sql import SqlConnection

_state_decoder = msgspec.json.Decoder(ProfileState)
_IN_LIST_SIZE = 500
_MAX_PARAMETERS = 2_000  # per statement; both databases allow far more, plans stay small


def erase_person(
    connection: SqlConnection, account_id: int, kind: str, value: str
) -> set[tuple[str, str]]:
    """Deletes the person's profile and events (the caller folded everything accepted
    so far first); returns every identifier the person had (at least the one named)."""
    found = find_profile(connection, account_id, kind, value)
    if found is None:
        return {(kind, value)}
    profile_id = found[0]
    rows = connection.execute(
        "SELECT kind, value FROM identities WHERE profile_id = ?", (profile_id,)
    ).fetchall()
    connection.execute("DELETE FROM events WHERE profile_id = ?", (profile_id,))
    connection.execute("DELETE FROM identities WHERE profile_id = ?", (profile_id,))
    connection.execute("DELETE FROM profiles WHERE id = ?", (profile_id,))
    connection.execute("DELETE FROM merged_profiles WHERE merged_into = ?", (profile_id,))
    # Imported here: sql_segments builds on this module's helpers.
    from eventfold.storage.sql_segments import erase_profile

    erase_profile(connection, profile_id, now_ms())
    from eventfold.storage.sql_webhooks import forget_person  # it imports this module

    forget_person(connection, profile_id)  # their webhook messages hold the profile
    return {(kind, value), *((row[0], row[1]) for row in rows)}


def find_profile(
    connection: SqlConnection, account_id: int, kind: str, value: str
) -> tuple[int, ProfileState] | None:
    row = connection.execute(
        "SELECT p.id, p.state FROM identities i JOIN profiles p ON p.id = i.profile_id"
        " WHERE i.account_id = ? AND i.kind = ? AND i.value = ?",
        (account_id, kind, indexed_value(value)),
    ).fetchone()
    return (row[0], _state_decoder.decode(row[1])) if row else None


def profile_by_id(
    connection: SqlConnection, account_id: int, profile_id: int
) -> ProfileState | int | None:
    """The account's profile with this id; or the id it was merged into; or None."""
    row = connection.execute(
        "SELECT state FROM profiles WHERE id = ? AND account_id = ?", (profile_id, account_id)
    ).fetchone()
    if row is not None:
        return _state_decoder.decode(row[0])
    merged = connection.execute(
        "SELECT merged_into FROM merged_profiles WHERE id = ? AND account_id = ?",
        (profile_id, account_id),
    ).fetchone()
    return int(merged[0]) if merged is not None else None


def profiles_after(
    connection: SqlConnection, account_id: int, after_id: int, limit: int
) -> list[ProfileRow]:
    """The account's profiles after ``after_id`` by id, with their segments' keys."""
    rows = connection.execute(
        "SELECT id, state FROM profiles WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
        (account_id, after_id, limit),
    ).fetchall()
    segments: dict[int, list[str]] = {}
    memberships = select_in(
        connection,
        "SELECT m.profile_id, s.key FROM segment_members m JOIN segments s"
        " ON s.id = m.segment_id WHERE m.profile_id IN ({}) ORDER BY s.key",
        (),
        [row[0] for row in rows],
    )
    for profile_id, key in memberships:
        segments.setdefault(profile_id, []).append(key)
    return [
        ProfileRow(row[0], _state_decoder.decode(row[1]), segments.get(row[0], [])) for row in rows
    ]


def list_events(connection: SqlConnection, query: EventQuery) -> list[StoredEvent]:
    clauses: list[str] = ["account_id = ?"]
    params: list[int | str] = [query.account_id]
    if query.before_seq is not None:
        clauses.append("seq < ?")
        params.append(query.before_seq)
    if query.after_seq is not None:
        clauses.append("seq > ?")
        params.append(query.after_seq)
    if query.actions:
        clauses.append(f"action IN ({', '.join('?' * len(query.actions))})")
        params.extend(query.actions)
    if query.start_ms is not None:
        clauses.append("occurred_at >= ?")
        params.append(query.start_ms)
    if query.end_ms is not None:
        clauses.append("occurred_at < ?")
        params.append(query.end_ms)
    if query.person is not None:
        kind, value = query.person
        clauses.append(
            "profile_id = (SELECT profile_id FROM identities WHERE account_id = ? AND kind = ?"
            " AND value = ?)"
        )
        params.extend([query.account_id, kind, indexed_value(value)])
    rows = connection.execute(
        f"SELECT seq, received_at, body, profile_id FROM events WHERE {' AND '.join(clauses)}"
        f" ORDER BY seq {'ASC' if query.ascending else 'DESC'} LIMIT ?",
        (*params, query.limit),
    )
    return [StoredEvent(seq, received, bytes(body), pid) for seq, received, body, pid in rows]


def event_profiles(
    connection: SqlConnection, account_id: int, seqs: Sequence[int]
) -> dict[int, int | None]:
    rows = select_in(
        connection,
        "SELECT seq, profile_id FROM events WHERE account_id = ? AND seq IN ({})",
        (account_id,),
        sorted(seqs),
    )
    return dict(rows)


def load_by_identifier(
    connection: SqlConnection, column: str, table: str, keys: Iterable[IdentityKey]
) -> dict[IdentityKey, int]:
    """``column`` of the rows of ``table`` (keyed by account, kind and indexed value)
    that these identifiers name, in one query per account and kind."""
    by_group: dict[tuple[int, str], dict[str, str]] = {}
    for account, kind, value in keys:
        by_group.setdefault((account, kind), {})[indexed_value(value)] = value
    found: dict[IdentityKey, int] = {}
    for (account, kind), values in by_group.items():
        rows = select_in(
            connection,
            f"SELECT value, {column} FROM {table} WHERE account_id = ? AND kind = ?"
            " AND value IN ({})",
            (account, kind),
            sorted(values),
        )
        found.update({(account, kind, values[stored]): number for stored, number in rows})
    return found


def select_in(
    connection: SqlConnection, sql: str, fixed: tuple[Any, ...], values: Sequence[Any]
) -> list[Any]:
    """The rows of ``sql`` (whose ``IN ({})`` takes the values) over all ``values``: on
    a connection that takes arrays (PostgreSQL) as one array parameter, else in chunks,
    since both databases bound the number of parameters of a statement."""
    if getattr(connection, "takes_arrays", False):
        # One statement whose text never changes: psycopg prepares it once, where an IN
        # list of a new length each time was parsed anew (a quarter of a fold step's CPU).
        query = sql.replace("IN ({})", "= ANY(?)")
        return list(connection.execute(query, (*fixed, list(values))).fetchall())
    rows: list[Any] = []
    for start in range(0, len(values), _IN_LIST_SIZE):
        chunk = values[start : start + _IN_LIST_SIZE]
        query = sql.format(", ".join("?" * len(chunk)))
        rows += connection.execute(query, (*fixed, *chunk)).fetchall()
    return rows


def execute_values(connection: SqlConnection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Runs ``sql`` (whose ``{}`` becomes a list of row tuples) over all ``rows``: one
    statement per chunk of rows instead of one per row (measured on PostgreSQL: folding
    10 k events of new people took 2.1 s instead of 2.7 s)."""
    if not rows:
        return
    placeholders = "(" + ", ".join("?" * len(rows[0])) + ")"
    per_statement = max(1, _MAX_PARAMETERS // len(rows[0]))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        statement = sql.format(", ".join([placeholders] * len(chunk)))
        connection.execute(statement, [value for row in chunk for value in row])


def insert_rows(
    connection: SqlConnection,
    into: str,
    types: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    suffix: str = "",
) -> None:
    """Inserts ``rows`` into ``into`` ("table (columns)") in one statement whose text
    never changes. On PostgreSQL with COPY when there is no ``suffix`` (ON CONFLICT),
    else as one binary array per column (``types`` their element types), unnested; on
    SQLite as one prepared statement run for each row. (Measured: a fold step with 50
    segments writes about 6 changes per event; as multi-row VALUES of a new length each
    time PostgreSQL planned every statement anew, 0.5 ms per event; 13,000 rows took
    about 400 ms as text arrays, 200 ms as binary ones and 100 ms with COPY.)"""
    if not rows:
        return
    raw = getattr(connection, "raw", None)
    if raw is not None and not suffix:
        with raw.cursor().copy(f"COPY {into} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    if getattr(connection, "takes_arrays", False):
        # %b: psycopg's binary parameters, past the ? the shared SQL is written with.
        arrays = ", ".join(f"%b::{kind}[]" for kind in types)
        connection.execute(
            f"INSERT INTO {into} SELECT * FROM unnest({arrays}){suffix}",
            [list(column) for column in zip(*rows, strict=True)],
        )
        return
    values = ", ".join("?" * len(types))
    connection.executemany(f"INSERT INTO {into} VALUES ({values}){suffix}", rows)
