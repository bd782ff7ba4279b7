"""Segments in SQL both backends speak: definitions, each person's event-leaf states and
next change moment, members, and the change feed.

The change feed's queue and its sequencing are ``sql_segment_feed``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from eventfold.clock import now_ms as current_ms
from eventfold.domain.fold_input import FoldInput
from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.evaluate import LeafState
from eventfold.domain.segments.program import PersonLeaves, known_of
from eventfold.storage.segment_contract import (
    FeedEntry,
    Member,
    MembershipChange,
    PersonVerdict,
    SegmentRecord,
    SegmentRecords,
)
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import SqlBase
from eventfold.storage.sql_fold import FoldLocking
from eventfold.storage.sql_profiles import insert_rows, select_in
from eventfold.storage.sql_segment_feed import (
    FEED_COUNTER,
    queued_changes,
    record_changes,
    sequence_changes,
)

T = TypeVar("T")
# MessagePack: read and written for every person a fold step touches (JSON decoding them
# was the largest single cost of the fold's segment hook with 50 segments). A map is a
# state stored before PersonLeaves (one entry per leaf, empty ones too).
_leaves_decoder = msgspec.msgpack.Decoder(PersonLeaves | dict[str, LeafState])
_leaves_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.json.Decoder(ProfileState)
_fold_input = msgspec.json.Decoder(FoldInput)
_SEGMENT_COLUMNS = (
    "id, account_id, key, name, definition, version, status, created_at, updated_at, backfill_after"
)


def _segment(row: Any) -> SegmentRecord:
    sid, account, key, name, definition, version, status, created, updated, after = row
    return SegmentRecord(
        sid, account, key, name, bytes(definition), version, status, created, updated, after
    )


def _person_leaves(stored: bytes) -> PersonLeaves:
    found = _leaves_decoder.decode(stored)
    if isinstance(found, PersonLeaves):
        return found
    empty = LeafState()
    return PersonLeaves(
        known_of(found), {fp: state for fp, state in found.items() if state != empty}
    )


class SqlSegmentRecords:
    """``SegmentRecords`` on the caller's connection and transaction."""

    def __init__(self, connection: SqlConnection, locking: FoldLocking, now_ms: int) -> None:
        self._connection = connection
        self._locking = locking
        self.now_ms = now_ms

    def definitions(self, account_ids: Iterable[int]) -> list[SegmentRecord]:
        rows = select_in(
            self._connection,
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE account_id IN ({{}}) ORDER BY id",
            (),
            sorted(set(account_ids)),
        )
        return [_segment(row) for row in rows]

    def segment_for_update(self, account_id: int, key: str) -> SegmentRecord | None:
        row = self._connection.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE account_id = ? AND key = ?"
            + self._locking.lock_rows_suffix,
            (account_id, key),
        ).fetchone()
        return _segment(row) if row else None

    def insert_segment(self, record: SegmentRecord) -> int:
        row = self._connection.execute(
            "INSERT INTO segments (account_id, key, name, definition, version, status,"
            " created_at, updated_at, backfill_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (
                record.account_id,
                record.key,
                record.name,
                record.definition,
                record.version,
                record.status,
                record.created_at_ms,
                record.updated_at_ms,
                record.backfill_after,
            ),
        ).fetchone()
        return int(row[0])

    def update_segment(self, record: SegmentRecord) -> None:
        self._connection.execute(
            "UPDATE segments SET name = ?, definition = ?, version = ?, status = ?,"
            " updated_at = ?, backfill_after = ? WHERE id = ?",
            (
                record.name,
                record.definition,
                record.version,
                record.status,
                record.updated_at_ms,
                record.backfill_after,
                record.id,
            ),
        )

    def delete_segment(self, segment_id: int) -> None:
        # Queued changes hold several segments' changes: numbered first, then dropped.
        while sequence_changes(self._connection, self._locking):
            pass
        for table, column in (
            ("segment_members", "segment_id"),
            ("segment_changes", "segment_id"),
            ("segments", "id"),
        ):
            self._connection.execute(f"DELETE FROM {table} WHERE {column} = ?", (segment_id,))

    def preparing_segment(self) -> SegmentRecord | None:
        # SKIP LOCKED (PostgreSQL): backfills in several processes take different segments.
        suffix = self._locking.lock_rows_suffix
        row = self._connection.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE status = 'preparing' ORDER BY id"
            " LIMIT 1" + (suffix + " SKIP LOCKED" if suffix else ""),
        ).fetchone()
        return _segment(row) if row else None

    def profiles_after(self, account_id: int, after: int, limit: int) -> dict[int, ProfileState]:
        rows = self._connection.execute(
            "SELECT id, state FROM profiles WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?"
            + self._locking.lock_rows_suffix,
            (account_id, after, limit),
        ).fetchall()
        return {pid: _state_decoder.decode(state) for pid, state in rows}

    def profile_ids_after(self, account_id: int, after: int, limit: int) -> list[int]:
        rows = self._connection.execute(
            "SELECT id FROM profiles WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
            (account_id, after, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def lock_profiles(self, profile_ids: Sequence[int]) -> dict[int, tuple[int, ProfileState]]:
        rows = select_in(
            self._connection,
            "SELECT id, account_id, state FROM profiles WHERE id IN ({}) ORDER BY id"
            + self._locking.lock_rows_suffix,
            (),
            sorted(profile_ids),
        )
        return {pid: (account, _state_decoder.decode(state)) for pid, account, state in rows}

    def events_of(self, profile_ids: Sequence[int]) -> dict[int, list[tuple[FoldInput, int]]]:
        rows = select_in(
            self._connection,
            "SELECT profile_id, occurred_at, body FROM events WHERE profile_id IN ({})",
            (),
            sorted(profile_ids),
        )
        found: dict[int, list[tuple[FoldInput, int]]] = {pid: [] for pid in profile_ids}
        for pid, at, body in rows:
            found[pid].append((_fold_input.decode(body), at))
        return found

    def segment_people(
        self, profile_ids: Sequence[int]
    ) -> dict[int, tuple[PersonLeaves, int | None]]:
        rows = select_in(
            self._connection,
            "SELECT profile_id, leaves, next_change_at FROM segment_people"
            " WHERE profile_id IN ({})",
            (),
            sorted(profile_ids),
        )
        return {pid: (_person_leaves(leaves), moment) for pid, leaves, moment in rows}

    def memberships(self, profile_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        rows = select_in(
            self._connection,
            "SELECT profile_id, segment_id, since FROM segment_members WHERE profile_id IN ({})",
            (),
            sorted(profile_ids),
        )
        found: dict[int, dict[int, int]] = {}
        for pid, segment_id, since in rows:
            found.setdefault(pid, {})[segment_id] = since
        return found

    def due_people(self, now_ms: int, limit: int) -> list[int]:
        rows = self._connection.execute(
            "SELECT profile_id FROM segment_people WHERE next_change_at <= ?"
            " ORDER BY next_change_at LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [row[0] for row in rows]

    def postpone(self, profile_id: int, until_ms: int) -> None:
        self._connection.execute(
            "UPDATE segment_people SET next_change_at = ?"
            " WHERE profile_id = ? AND next_change_at <= ?",
            (until_ms, profile_id, self.now_ms),
        )

    def save(
        self,
        verdicts: Sequence[PersonVerdict],
        forget: Sequence[int],
        changes: Sequence[MembershipChange],
    ) -> None:
        connection = self._connection
        if forget:
            select_in(
                connection,
                "DELETE FROM segment_people WHERE profile_id IN ({}) RETURNING profile_id",
                (),
                sorted(forget),
            )
        insert_rows(
            connection,
            "segment_people (profile_id, account_id, leaves, next_change_at)",
            ("bigint", "bigint", "bytea", "bigint"),
            [
                (v.profile_id, v.account_id, _leaves_encoder.encode(v.leaves), v.next_change_ms)
                for v in sorted(verdicts, key=lambda v: v.profile_id)
            ],
            " ON CONFLICT (profile_id) DO UPDATE SET leaves = excluded.leaves,"
            " next_change_at = excluded.next_change_at",
        )
        exits = [(c.segment_id, c.profile_id) for c in changes if c.change == "exited"]
        if getattr(connection, "takes_arrays", False) and exits:
            connection.execute(
                "DELETE FROM segment_members m USING unnest(%b::bigint[], %b::bigint[])"
                " AS gone (segment_id, profile_id)"
                " WHERE m.segment_id = gone.segment_id AND m.profile_id = gone.profile_id",
                [list(column) for column in zip(*exits, strict=True)],
            )
        elif exits:
            connection.executemany(
                "DELETE FROM segment_members WHERE segment_id = ? AND profile_id = ?", exits
            )
        insert_rows(
            connection,
            "segment_members (segment_id, profile_id, since)",
            ("bigint", "bigint", "bigint"),
            [(c.segment_id, c.profile_id, c.at_ms) for c in changes if c.change == "entered"],
            " ON CONFLICT (segment_id, profile_id) DO NOTHING",
        )
        record_changes(connection, changes)


def erase_profile(connection: SqlConnection, profile_id: int, now_ms: int) -> None:
    """The erased person leaves every segment (recorded as ``exited`` under the profile's
    own eventfold id, nothing else) and their segment state is dropped."""
    rows = connection.execute(
        "SELECT m.segment_id, s.account_id, s.version FROM segment_members m"
        " JOIN segments s ON s.id = m.segment_id WHERE m.profile_id = ?",
        (profile_id,),
    ).fetchall()
    if rows:
        by_account: dict[int, list[tuple[int, str, int]]] = {}
        for sid, account, version in rows:
            by_account.setdefault(account, []).append((sid, "exited", version))
        for account, found in sorted(by_account.items()):
            connection.execute(
                "INSERT INTO segment_change_queue (account_id, profile_id, at, changes)"
                " VALUES (?, ?, ?, ?)",
                (account, profile_id, now_ms, queued_changes(found)),
            )
    connection.execute("DELETE FROM segment_members WHERE profile_id = ?", (profile_id,))
    connection.execute("DELETE FROM segment_people WHERE profile_id = ?", (profile_id,))


class SqlSegmentStore(SqlBase):
    """``SegmentStore`` over ``SqlBase``'s connections; ``SqlStorage`` inherits it."""

    def segments_transaction(
        self, job: Callable[[SegmentRecords], T], now_ms: int | None = None
    ) -> T:
        def run(connection: SqlConnection) -> T:
            self._lock_fold_gate(connection, exclusive=False)
            return job(self.segment_records(connection, now_ms or current_ms()))

        return self._run_fold(run)

    def segment_records(self, connection: SqlConnection, now_ms: int) -> SqlSegmentRecords:
        return SqlSegmentRecords(connection, self._fold_locking, now_ms)

    def list_segments(self, account_id: int) -> list[tuple[SegmentRecord, int]]:
        with self._reading() as connection:
            rows = connection.execute(
                f"SELECT {_SEGMENT_COLUMNS} FROM segments WHERE account_id = ? ORDER BY key",
                (account_id,),
            ).fetchall()
            counts = dict(
                connection.execute(
                    "SELECT m.segment_id, count(*) FROM segment_members m JOIN segments s"
                    " ON s.id = m.segment_id WHERE s.account_id = ? GROUP BY m.segment_id",
                    (account_id,),
                ).fetchall()
            )
        return [(_segment(row), int(counts.get(row[0], 0))) for row in rows]

    def segment_members(self, segment_id: int, after: int, limit: int) -> list[Member]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT m.profile_id, m.since, p.state FROM segment_members m"
                " JOIN profiles p ON p.id = m.profile_id"
                " WHERE m.segment_id = ? AND m.profile_id > ? ORDER BY m.profile_id LIMIT ?",
                (segment_id, after, limit),
            ).fetchall()
        return [Member(pid, since, _state_decoder.decode(state)) for pid, since, state in rows]

    def segment_changes(self, segment_id: int, after: int, limit: int) -> list[FeedEntry]:
        self._run_fold(lambda connection: sequence_changes(connection, self._fold_locking))
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT feed_position, profile_id, change, at, version FROM segment_changes"
                " WHERE segment_id = ? AND feed_position > ? ORDER BY feed_position LIMIT ?",
                (segment_id, after, limit),
            ).fetchall()
        return [FeedEntry(*row) for row in rows]

    def account_changes(
        self, account_id: int, after: int, limit: int
    ) -> list[tuple[int, str, int, str, int]]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT c.feed_position, s.key, c.profile_id, c.change, c.at"
                " FROM segment_changes c JOIN segments s ON s.id = c.segment_id"
                " WHERE c.account_id = ? AND c.feed_position > ?"
                " ORDER BY c.feed_position LIMIT ?",
                (account_id, after, limit),
            ).fetchall()
        return [tuple(row) for row in rows]

    def last_segment_change(self) -> int:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT value FROM fold_state WHERE name = ?", (FEED_COUNTER,)
            ).fetchone()
        return int(row[0]) if row else 0

    def profile_segments(self, profile_id: int) -> list[str]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT s.key FROM segment_members m JOIN segments s ON s.id = m.segment_id"
                " WHERE m.profile_id = ? ORDER BY s.key",
                (profile_id,),
            ).fetchall()
        return [row[0] for row in rows]

    def segment_timer_lag(self, now_ms: int) -> float:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT min(next_change_at) FROM segment_people WHERE next_change_at <= ?",
                (now_ms,),
            ).fetchone()
        return max(0.0, (now_ms - row[0]) / 1000) if row and row[0] is not None else 0.0

    def sequence_segment_changes(self, forget_before_ms: int) -> None:
        def run(connection: SqlConnection) -> None:
            sequence_changes(connection, self._fold_locking)
            connection.execute(
                "DELETE FROM segment_changes WHERE at < ? AND feed_position IS NOT NULL",
                (forget_before_ms,),
            )

        self._run_fold(run)
