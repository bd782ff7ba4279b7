"""Property tests: the same events folded in any order and any grouping give the same
profiles (ids aside, which depend on which profile was created first)."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.profile import (
    FoldCustom,
    FoldCustomField,
    FoldInput,
    FoldProduct,
    ProfileState,
    fold_events,
    merge_states,
    profile_view,
    state_of_event,
)
from eventfold.domain.profile_book import ProfileBook
from eventfold.services.fold import fold_claimed
from eventfold.storage import sql_profiles
from eventfold.storage.batch_records import encode_events
from eventfold.storage.migrations import migrate_sqlite
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import EVENT_ROW_COLUMNS
from eventfold.storage.sql_fold import FoldLocking, QueueCursor, SqlFoldTransaction

ACCOUNT = 1


def fold_transaction(connection: sqlite3.Connection, cursor: QueueCursor) -> SqlFoldTransaction:
    """A fold step's transaction on SQLite (autocommit here: each statement commits)."""
    return SqlFoldTransaction(
        connection, FoldLocking(), cursor, now_ms=0, insert_events=_insert_events
    )


def _insert_events(connection: SqlConnection, rows: list[tuple[Any, ...]]) -> None:
    connection.executemany(
        f"INSERT INTO events ({', '.join(EVENT_ROW_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(EVENT_ROW_COLUMNS))})",
        rows,
    )


def log_event(connection: sqlite3.Connection, seq: int, at: int, event: FoldInput) -> None:
    """Appends the event to the log as a batch of its own at position ``seq``."""
    record = AcceptedEvent(
        at,
        event.action,
        event.email,
        event.phoneNumber,
        event.profileId,
        msgspec.json.encode(event),
    )
    connection.execute(
        "INSERT INTO batches (seq, account_id, received_at, event_count, body)"
        " VALUES (?, 1, 0, 1, ?)",
        (seq, encode_events([record])),
    )


Event = tuple[int, int, FoldInput]  # (timestamp ms, acceptance position, event)

custom_fields = st.lists(
    st.builds(
        FoldCustomField,
        key=st.sampled_from(["color", "size"]),
        values=st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
    ),
    max_size=2,
)
fold_inputs = st.builds(
    FoldInput,
    action=st.sampled_from(["view", "buy"]),
    email=st.sampled_from([None, "a@x.co", "b@x.co", "c@x.co"]),
    phoneNumber=st.sampled_from([None, "+3591111", "+3592222"]),
    profileId=st.sampled_from([None, "p1", "p2"]),
    locale=st.sampled_from([None, "bg", "en"]),
    products=st.lists(st.builds(FoldProduct, id=st.sampled_from(["1", "2", "3"])), max_size=3),
    custom=st.one_of(
        st.none(),
        st.builds(FoldCustom, string=custom_fields, numeric=st.just([]), date=st.just([])),
    ),
    tags=st.lists(st.sampled_from(["t1", "t2"]), max_size=2),
).filter(lambda e: e.email is not None or e.phoneNumber is not None)
event_sets = st.lists(
    st.tuples(st.sampled_from([1_000, 2_000, 3_000]), fold_inputs), min_size=1, max_size=25
).map(lambda items: [(at, seq + 1, event) for seq, (at, event) in enumerate(items)])


def fold_in_one_book(events: list[Event]) -> dict[Any, dict[str, Any]]:
    last_id = 0

    def allocate() -> int:
        nonlocal last_id
        last_id += 1
        return last_id

    book = ProfileBook({}, {}, allocate)
    for at, seq, event in events:
        book.fold(ACCOUNT, event, at, seq)
    book.settle()
    return by_people({pid: state for pid, state in book.states.items()})


def by_people(states: dict[int, ProfileState]) -> dict[Any, dict[str, Any]]:
    """Profiles keyed by their identifiers, without the eventfold id."""
    people = {}
    for state in states.values():
        view = msgspec.to_builtins(profile_view("ignored", state))
        del view["id"]
        people[(tuple(view["emails"]), tuple(view["phoneNumbers"]), tuple(view["profileIds"]))] = (
            view
        )
    return people


@settings(max_examples=300, deadline=None)
@given(events=event_sets, order=st.randoms(use_true_random=False))
def test_folding_in_any_order_gives_the_same_profiles(events: list[Event], order: Any) -> None:
    shuffled = list(events)
    order.shuffle(shuffled)
    assert fold_in_one_book(shuffled) == fold_in_one_book(events)


@settings(max_examples=300, deadline=None)
@given(events=event_sets, order=st.randoms(use_true_random=False))
def test_merging_in_any_grouping_gives_the_same_state(events: list[Event], order: Any) -> None:
    singles = [state_of_event(event, at, seq) for at, seq, event in events]
    left_fold = singles[0]
    for state in singles[1:]:
        left_fold = merge_states(left_fold, state)
    pool = list(singles)
    while len(pool) > 1:  # merge random pairs, in random argument order
        a = pool.pop(order.randrange(len(pool)))
        b = pool.pop(order.randrange(len(pool)))
        pool.append(merge_states(a, b))
    assert profile_view("x", pool[0]) == profile_view("x", left_fold)


@settings(max_examples=300, deadline=None)
@given(events=event_sets, split=st.integers(min_value=0, max_value=25))
def test_folding_in_one_pass_equals_merging_each_event(events: list[Event], split: int) -> None:
    singles = [state_of_event(event, at, seq) for at, seq, event in events]
    merged = ProfileState()
    for state in singles:
        merged = merge_states(merged, state)
    start = fold_events(ProfileState(), [(e, at, seq) for at, seq, e in events[:split]])
    in_one_pass = fold_events(start, [(e, at, seq) for at, seq, e in events[split:]])
    assert profile_view("x", in_one_pass) == profile_view("x", merged)


@settings(max_examples=60, deadline=None)
@given(events=event_sets, chunk=st.integers(min_value=1, max_value=7))
def test_sqlite_fold_in_any_chunk_size_matches_the_pure_fold(
    events: list[Event], chunk: int
) -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    migrate_sqlite(connection)
    connection.execute("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', 0)")
    for at, seq, event in events:
        log_event(connection, seq, at, event)
    while fold_claimed(fold_transaction(connection, QueueCursor()), chunk):
        pass
    rows = connection.execute("SELECT id, state FROM profiles").fetchall()
    stored = {pid: msgspec.json.decode(state, type=ProfileState) for pid, state in rows}
    assert by_people(stored) == fold_in_one_book(events)
    assert connection.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    folded = connection.execute("SELECT count(*) FROM events WHERE profile_id IS NOT NULL")
    assert folded.fetchone()[0] == len(events)


def test_a_queue_cursor_reaches_a_late_lower_event_only_when_it_rescans() -> None:
    """PostgreSQL can commit a lower position after the fold passed it."""
    connection = sqlite3.connect(":memory:", isolation_level=None)
    migrate_sqlite(connection)
    connection.execute("INSERT INTO accounts (id, name, created_at) VALUES (1, 'a', 0)")

    def commit_event(seq: int) -> None:
        log_event(connection, seq, 0, FoldInput("view", email=f"p{seq}@shop.example"))

    for seq in (10, 11, 12):
        commit_event(seq)
    forward, rescanning = QueueCursor(), QueueCursor(0.0)
    assert fold_claimed(fold_transaction(connection, forward), 2) == 2
    assert fold_claimed(fold_transaction(connection, forward), 2) == 1
    commit_event(5)
    assert fold_claimed(fold_transaction(connection, forward), 2) == 0
    assert fold_claimed(fold_transaction(connection, rescanning), 2) == 1
    assert connection.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    assert sql_profiles.find_profile(connection, 1, "email", "p5@shop.example") is not None
