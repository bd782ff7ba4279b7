"""Property tests: the same events and profile upserts folded in any order and any
grouping give the same profiles (ids aside, which depend on which profile was created
first)."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import (
    FoldCustom,
    FoldCustomField,
    FoldInput,
    FoldItem,
    FoldProduct,
    FoldUpsert,
)
from eventfold.domain.profile import (
    ProfileState,
    Stamped,
    fold_events,
    merge_states,
    profile_view,
    state_of_event,
    state_of_upsert,
)
from eventfold.domain.profile_book import ProfileBook
from eventfold.domain.upserts import AcceptedUpsert
from eventfold.services.fold import fold_claimed
from eventfold.storage import sql_profiles
from eventfold.storage.batch_records import encode_entries
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


def log_event(connection: sqlite3.Connection, seq: int, at: int, event: FoldItem) -> None:
    """Appends the event (or upsert) to the log as a batch of its own at position ``seq``."""
    document = msgspec.json.encode(event)
    if isinstance(event, FoldUpsert):
        upsert = AcceptedUpsert(at, event.email, event.phoneNumber, event.profileId, document)
        record = encode_entries([upsert])
    else:
        record = encode_entries(
            [
                AcceptedEvent(
                    at, event.action, event.email, event.phoneNumber, event.profileId, document
                )
            ]
        )
    connection.execute(
        "INSERT INTO batches (seq, account_id, received_at, event_count, body)"
        " VALUES (?, 1, 0, 1, ?)",
        (seq, record),
    )


Event = tuple[int, int, FoldItem]  # (timestamp ms, acceptance position, event or upsert)
TAGS = ["t1", "t2", "t3"]

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
    tags=st.lists(st.sampled_from(TAGS), max_size=2),
).filter(lambda e: e.email is not None or e.phoneNumber is not None)
fold_upserts = st.builds(
    FoldUpsert,
    email=st.sampled_from([None, "a@x.co", "b@x.co", "c@x.co"]),
    phoneNumber=st.sampled_from([None, "+3591111", "+3592222"]),
    profileId=st.sampled_from([None, "p1", "p2"]),
    custom=st.one_of(
        st.none(),
        st.builds(FoldCustom, string=custom_fields, numeric=st.just([]), date=st.just([])),
    ),
    addTags=st.lists(st.sampled_from(TAGS), max_size=2),
    removeTags=st.lists(st.sampled_from(TAGS), max_size=2),
).filter(lambda u: u.email is not None or u.phoneNumber is not None or u.profileId is not None)
fold_items = st.one_of(fold_inputs, fold_upserts)
event_sets = st.lists(
    st.tuples(st.sampled_from([1_000, 2_000, 3_000]), fold_items), min_size=1, max_size=25
).map(lambda items: [(at, seq + 1, event) for seq, (at, event) in enumerate(items)])


def state_of(event: FoldItem, at: int, seq: int) -> ProfileState:
    if isinstance(event, FoldUpsert):
        return state_of_upsert(event, at, seq)
    return state_of_event(event, at, seq)


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
    return by_people({pid: state for pid, state in book.states.items()}, with_stamps=True)


def by_people(
    states: dict[int, ProfileState], with_stamps: bool = False
) -> dict[Any, dict[str, Any]]:
    """Profiles keyed by their identifiers, without the eventfold id (and, unless
    ``with_stamps``, as the API shows them)."""
    people = {}
    for state in states.values():
        view = msgspec.to_builtins(profile_view("ignored", state))
        del view["id"]
        if with_stamps:  # the tags' stamps, positions included
            view["tag_changes"] = msgspec.to_builtins(state.tag_changes)
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
    singles = [state_of(event, at, seq) for at, seq, event in events]
    left_fold = singles[0]
    for state in singles[1:]:
        left_fold = merge_states(left_fold, state)
    pool = list(singles)
    while len(pool) > 1:  # merge random pairs, in random argument order
        a = pool.pop(order.randrange(len(pool)))
        b = pool.pop(order.randrange(len(pool)))
        pool.append(merge_states(a, b))
    assert profile_view("x", pool[0]) == profile_view("x", left_fold)
    assert pool[0].tag_changes == left_fold.tag_changes


@settings(max_examples=300, deadline=None)
@given(events=event_sets, split=st.integers(min_value=0, max_value=25))
def test_folding_in_one_pass_equals_merging_each_event(events: list[Event], split: int) -> None:
    singles = [state_of(event, at, seq) for at, seq, event in events]
    merged = ProfileState()
    for state in singles:
        merged = merge_states(merged, state)
    start = fold_events(ProfileState(), [(e, at, seq) for at, seq, e in events[:split]])
    in_one_pass = fold_events(start, [(e, at, seq) for at, seq, e in events[split:]])
    assert profile_view("x", in_one_pass) == profile_view("x", merged)
    assert in_one_pass.tag_changes == merged.tag_changes
    assert in_one_pass.event_count == sum(isinstance(e, FoldInput) for _, _, e in events)


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
    assert by_people(stored, with_stamps=True) == fold_in_one_book(events)
    assert connection.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
    folded = connection.execute("SELECT count(*) FROM events WHERE profile_id IS NOT NULL")
    assert folded.fetchone()[0] == sum(isinstance(e, FoldInput) for _, _, e in events)


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


def test_a_tags_latest_change_wins_whatever_order_the_fold_sees() -> None:
    add = FoldInput("view", email="a@x.co", tags=["vip"])
    remove = FoldUpsert(email="a@x.co", removeTags=["vip"])
    removed_later: list[tuple[FoldItem, int, int]] = [(add, 1_000, 1), (remove, 2_000, 2)]
    added_later: list[tuple[FoldItem, int, int]] = [(add, 2_000, 1), (remove, 1_000, 2)]
    for changes, tags in ((removed_later, []), (added_later, ["vip"])):
        assert fold_events(ProfileState(), changes).tags == tags
        assert fold_events(ProfileState(), changes[::-1]).tags == tags


def test_tags_folded_before_tags_had_stamps_count_as_added_at_last_seen() -> None:
    """A profile stored by an older version has tags and no tag_changes."""
    stored = ProfileState(first_seen=1_000, last_seen=5_000, event_count=2, tags=["vip"])
    older = FoldUpsert(email="a@x.co", removeTags=["vip"])
    assert fold_events(stored, [(older, 4_000, 9)]).tags == ["vip"]
    assert fold_events(stored, [(older, 6_000, 9)]).tags == []
    merged = merge_states(stored, state_of_upsert(older, 6_000, 9))
    assert merged.tags == []
    assert merged.tag_changes["vip"] == Stamped(6_000, 9, 1, False)


def test_a_profile_is_created_by_a_step_only_while_it_holds_nothing_made_before() -> None:
    """What the segment hook starts from scratch (services/segments_fold.py)."""
    known = (ACCOUNT, "email", "old@x.co")
    ids = iter(range(10, 20))
    book = ProfileBook({known: 1}, {1: (ACCOUNT, ProfileState(emails=["old@x.co"]))}, ids.__next__)
    first = book.fold(ACCOUNT, FoldInput(action="a", email="a@x.co"), 0, 1)
    second = book.fold(ACCOUNT, FoldInput(action="a", email="b@x.co"), 0, 2)
    assert book.created == {first, second}
    # Two new profiles merged: still new; merged with a profile made before: not new.
    book.fold(ACCOUNT, FoldInput(action="a", email="a@x.co", phoneNumber="+359888000001"), 0, 3)
    book.fold(ACCOUNT, FoldInput(action="a", email="b@x.co", phoneNumber="+359888000001"), 0, 4)
    assert book.created == {first}
    book.fold(ACCOUNT, FoldInput(action="a", email="old@x.co", phoneNumber="+359888000001"), 0, 5)
    assert book.created == set()
