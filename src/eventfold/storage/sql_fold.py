"""The fold's transaction in SQL both backends speak: claim the next batches of the log,
load and lock the people they name, save what the fold made of them with the events'
rows (listings read those; the batch leaves the log in the same transaction).

The fold itself (which profile an event joins, merges, the new states) is the service
layer's (``services/fold.py``); this module only loads and saves. A backend says how
several folds at once are kept apart (``FoldLocking``): SQLite has one writer, so
nothing; PostgreSQL claims the log's batches with ``SKIP LOCKED`` and locks the profile rows a
step reads (by id, so in one order), and the identities table's unique key settles two
folds that file the same new identifier: the second one's step is retried. So any
number of workers fold different people at once and never the same person twice at
once, with row locks only (no advisory lock per identifier, which could fill
PostgreSQL's shared lock table: a step names about 3,000 identifiers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldInput, FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.domain.profile_book import IdentityKey, ProfileBook
from eventfold.errors import FoldContention
from eventfold.storage.base import LogEntries, PendingEvent, PendingItem
from eventfold.storage.batch_records import are_upserts, decode_entries, pending_upserts
from eventfold.storage.decoded_batches import Decoded, DecodedBatches
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.segment_contract import SegmentRecords
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_log import count_folded, first_holding
from eventfold.storage.sql_profiles import execute_values, load_by_identifier, select_in
from eventfold.storage.sql_webhooks import queue_matched_events

_fold_input = msgspec.json.Decoder(FoldInput)
_state_decoder = msgspec.json.Decoder(ProfileState)
_state_encoder = msgspec.json.Encoder()
Row = tuple[Any, ...]
# How often a fold re-reads the identifiers it locked when a profile it found was merged
# away meanwhile, before it gives up and the step is retried.
_MAX_RELOADS = 5
_NEW_PER_STATEMENT = 500
# Profile ids taken from PostgreSQL's sequence at once (unused ones are skipped: ids have
# gaps, which nothing minds).
_IDS_AT_ONCE = 256


def pending_events(
    seq: int,
    account_id: int,
    received_at_ms: int,
    events: Sequence[AcceptedEvent],
    sources: Sequence[FoldSource | None] | None = None,
) -> list[PendingEvent]:
    """The events of the batch at position ``seq``, at their positions, as the fold
    takes them: with what the fold reads of each, given or decoded from its document."""
    decode = _fold_input.decode
    return [
        PendingEvent(
            seq + index,
            account_id,
            received_at_ms,
            event,
            decode(event.document) if source is None else source,
        )
        for index, (event, source) in enumerate(
            zip(events, sources or [None] * len(events), strict=True)
        )
    ]


def pending_items(
    seq: int,
    account_id: int,
    received_at_ms: int,
    entries: LogEntries,
    sources: Sequence[FoldSource | None] | None = None,
) -> Sequence[PendingItem]:
    """The events (see ``pending_events``), or the profile upserts, of the batch at
    position ``seq``, at their positions, as the fold takes them."""
    if are_upserts(entries):
        return pending_upserts(seq, account_id, received_at_ms, entries)
    events = cast(Sequence[AcceptedEvent], entries)
    return pending_events(seq, account_id, received_at_ms, events, sources)


class QueueCursor:
    """Where fold steps start reading the log of batches.

    The fold deletes what it folds from ``batches``, and on PostgreSQL a deleted entry
    stays in the index until vacuum: steps that all scanned from the start passed every
    one (measured on the queue of events the log replaced: from 4 to 60 ms a step over
    a 100k-event backlog). So a step starts after the last batch the step before it
    claimed. PostgreSQL can commit a lower position after a higher one was folded (and a
    step that rolls back leaves its batches behind the cursor), so a cursor with
    ``rescan_seconds`` starts from the beginning again that often; a cursor without only
    moves forward.
    """

    def __init__(self, rescan_seconds: float | None = None) -> None:
        self._after = 0
        self._rescan_seconds = rescan_seconds
        self._rescan_at = time.monotonic() + (rescan_seconds or 0)

    def start(self) -> int:
        """The sequence number the next step reads after."""
        if self._rescan_seconds is not None and time.monotonic() >= self._rescan_at:
            self._after = 0
            self._rescan_at = time.monotonic() + self._rescan_seconds
        return self._after

    def moved_to(self, seq: int) -> None:
        self._after = max(self._after, seq)


@dataclass(frozen=True, slots=True)
class FoldLocking:
    """How a backend keeps concurrent folds apart."""

    # Appended to the queue's SELECT: PostgreSQL's "FOR UPDATE SKIP LOCKED".
    claim_suffix: str = ""
    # Appended to the profiles' SELECT: PostgreSQL's "FOR UPDATE".
    lock_rows_suffix: str = ""
    # ``count`` new profile ids.
    allocate_ids: Callable[[SqlConnection, int], list[int]] | None = None


class SqlFoldTransaction:
    """One fold transaction on the caller's connection (see ``FoldTransaction``)."""

    def __init__(
        self,
        connection: SqlConnection,
        locking: FoldLocking,
        cursor: QueueCursor,
        now_ms: int,
        insert_events: Callable[[SqlConnection, list[Row]], None],
        decoded_batches: DecodedBatches | None = None,
    ) -> None:
        self._connection = connection
        self._decoded_batches = decoded_batches
        self._locking = locking
        self._insert_events = insert_events
        self._cursor = cursor
        self._now_ms = now_ms
        self._spare_ids: list[int] = []
        self._last_id: int | None = None
        self._known: set[IdentityKey] = set()  # identifiers that had a profile when read

    def claim(self, max_events: int, seqs: Sequence[int] | None = None) -> list[PendingItem]:
        connection = self._connection
        if seqs is None:
            # The next batches by position, as many as hold ``max_events`` (at least one);
            # then those of them no other fold holds, locked, with their records.
            rows = connection.execute(
                "SELECT seq, event_count FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._cursor.start(), max_events),
            ).fetchall()
            wanted = first_holding(rows, max_events)
        else:
            wanted = sorted(seqs)
        if not wanted:
            return []
        # Without a hand-off every record is read: in the same statement.
        body = ", body" if self._decoded_batches is None else ""
        batches = select_in(
            connection,
            f"SELECT seq, account_id, received_at, event_count{body} FROM batches"
            " WHERE seq IN ({}) ORDER BY seq" + self._locking.claim_suffix,
            (),
            wanted,
        )
        if not batches:
            return []
        claimed = [row[0] for row in batches]
        if seqs is None:
            self._cursor.moved_to(claimed[-1])
        decoded = self._decoded(batches)
        select_in(connection, "DELETE FROM batches WHERE seq IN ({}) RETURNING seq", (), claimed)
        return [
            event
            for seq, account, received_at, *_ in batches
            for event in pending_items(seq, account, received_at, *decoded[seq])
        ]

    def _decoded(self, batches: Sequence[Row]) -> dict[int, Decoded]:
        """The claimed batches' events: as handed over by this process's request path
        where it can (``DecodedBatches``), else decoded from their records (read with
        the claim when there is no hand-off)."""
        found: dict[int, Decoded] = {}
        if self._decoded_batches is None:
            records: Sequence[Row] = [(row[0], row[4]) for row in batches]
        else:
            for seq, _, _, event_count in batches:
                decoded = self._decoded_batches.take(seq, event_count)
                if decoded is not None:
                    found[seq] = decoded
            missing = [row[0] for row in batches if row[0] not in found]
            records = []
            if missing:
                records = select_in(
                    self._connection,
                    "SELECT seq, body FROM batches WHERE seq IN ({})",
                    (),
                    missing,
                )
        for seq, body in records:
            entries = decode_entries(bytes(body))  # events, or profile upserts
            found[seq] = (entries, [None] * len(entries))
        return found

    def load_people(
        self, keys: Iterable[IdentityKey]
    ) -> tuple[dict[IdentityKey, int], dict[int, tuple[int, ProfileState]]]:
        connection, locking = self._connection, self._locking
        keys = sorted(set(keys))
        identities = load_by_identifier(connection, "profile_id", "identities", keys)
        locked: dict[int, tuple[int, ProfileState]] = {}
        for _ in range(_MAX_RELOADS):
            wanted = set(identities.values()) - locked.keys()
            rows = select_in(
                connection,
                "SELECT id, account_id, state FROM profiles WHERE id IN ({}) ORDER BY id"
                + locking.lock_rows_suffix,
                (),
                sorted(wanted),
            )
            locked.update(
                (pid, (account, _state_decoder.decode(state))) for pid, account, state in rows
            )
            # Read the identifiers again now that their profiles are locked: another fold
            # may have merged one of those profiles away, or filed one of the identifiers,
            # before the lock was granted. Once a reading finds every profile locked and
            # nothing changed, nothing can change: a merge needs the locks held here.
            again = identities
            if locking.lock_rows_suffix:
                again = load_by_identifier(connection, "profile_id", "identities", keys)
            if again == identities and set(again.values()) <= locked.keys():
                self._known = set(identities)
                return identities, {pid: locked[pid] for pid in set(identities.values())}
            identities = again
        raise FoldContention("profiles kept changing under the fold; the step is retried")

    def allocate_profile_id(self) -> int:
        if self._locking.allocate_ids is None:
            # One writer at a time (SQLite): a counter row, written back by ``save``.
            if self._last_id is None:
                row = self._connection.execute(
                    "SELECT value FROM fold_state WHERE name = ?", (_LAST_PROFILE_ID,)
                ).fetchone()
                self._last_id = int(row[0]) if row else 0
            self._last_id += 1
            return self._last_id
        if not self._spare_ids:
            self._spare_ids = self._locking.allocate_ids(self._connection, _IDS_AT_ONCE)[::-1]
        return self._spare_ids.pop()

    def save(self, book: ProfileBook, folded: Sequence[tuple[PendingItem, int]]) -> None:
        connection = self._connection
        for dead, survivor in book.merged_into.items():
            final = book.final_id(survivor)
            connection.execute(
                "UPDATE identities SET profile_id = ? WHERE profile_id = ?", (final, dead)
            )
            connection.execute(
                "UPDATE merged_profiles SET merged_into = ? WHERE merged_into = ?", (final, dead)
            )
            connection.execute(
                "INSERT INTO merged_profiles (id, account_id, merged_into) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET merged_into = excluded.merged_into",
                (dead, book.accounts[final], final),
            )
            connection.execute(
                "UPDATE events SET profile_id = ? WHERE profile_id = ?", (final, dead)
            )
            connection.execute("DELETE FROM profiles WHERE id = ?", (dead,))
        changed = sorted(book.changed_identities.items())
        execute_values(
            connection,
            "INSERT INTO identities (account_id, kind, value, profile_id) VALUES {}"
            " ON CONFLICT (account_id, kind, value) DO UPDATE SET profile_id = excluded.profile_id",
            [
                (account, kind, indexed_value(value), profile_id)
                for (account, kind, value), profile_id in changed
                if (account, kind, value) in self._known
            ],
        )
        self._file_new_identifiers(
            [(key, profile_id) for key, profile_id in changed if key not in self._known]
        )
        execute_values(
            connection,
            "INSERT INTO profiles (id, account_id, state, updated_at) VALUES {}"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at",
            [
                (pid, book.accounts[pid], _state_encoder.encode(book.states[pid]), self._now_ms)
                for pid in sorted(book.touched)
            ],
        )
        self._insert_events(
            connection,
            [
                (pending.seq, pending.account_id, pending.received_at_ms, *pending.accepted, pid)
                for pending, pid in folded
                if isinstance(pending, PendingEvent)  # an upsert leaves no row
            ],
        )
        count_folded(connection, len(folded))
        if self._last_id is not None:
            connection.execute(
                "INSERT INTO fold_state (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (_LAST_PROFILE_ID, self._last_id),
            )

    def segment_records(self) -> SegmentRecords:
        # Imported here: sql_segments builds on sql_base, which builds on this module.
        from eventfold.storage.sql_segments import SqlSegmentRecords

        return SqlSegmentRecords(self._connection, self._locking, self._now_ms)

    def queue_webhooks(self, book: ProfileBook, folded: Sequence[tuple[PendingEvent, int]]) -> None:
        queue_matched_events(self._connection, book, folded, self._now_ms)

    def _file_new_identifiers(self, new: Sequence[tuple[IdentityKey, int]]) -> None:
        """Inserts identifiers no profile had when they were read. Another fold may have
        filed one since: the unique key makes this insert wait for that fold's commit and
        then skip the row, and the step is retried (it then finds the identifier). In key
        order, so two folds filing the same new identifiers never wait for each other in
        a circle."""
        for start in range(0, len(new), _NEW_PER_STATEMENT):
            chunk = new[start : start + _NEW_PER_STATEMENT]
            rows = self._connection.execute(
                "INSERT INTO identities (account_id, kind, value, profile_id) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (account_id, kind, value) DO NOTHING RETURNING value",
                [
                    item
                    for (account, kind, value), profile_id in chunk
                    for item in (account, kind, indexed_value(value), profile_id)
                ],
            ).fetchall()
            if len(rows) < len(chunk):
                raise FoldContention(
                    "another fold filed one of this step's new identifiers; the step is retried"
                )


_LAST_PROFILE_ID = "last_profile_id"
