"""Several real fold workers at once, on random interleavings of appends (of events and
of profile upserts), identity merges and erasures, make exactly the profiles that one
serial fold makes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.profile import ProfileState
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.validation import BatchValidator
from eventfold.services.fold import FoldService, fold_everything
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage
from eventfold.worker import FoldWorker
from tests.test_fold_properties import by_people

WORKERS = 3
validator = BatchValidator(Limits())
upsert_validator = UpsertValidator(Limits(), validator.types)

events = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["view", "buy"]),
        "timestamp": st.sampled_from(["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"]),
        "tags": st.lists(st.sampled_from(["t1", "t2"]), max_size=1),
        "locale": st.sampled_from(["bg", "en"]),
    },
    optional={
        "email": st.sampled_from(["a@x.co", "b@x.co", "c@x.co", "d@x.co"]),
        "phoneNumber": st.sampled_from(["+3591111", "+3592222", "+3593333"]),
    },
).filter(lambda event: "email" in event or "phoneNumber" in event)
upserts = st.fixed_dictionaries(
    {
        "timestamp": st.sampled_from(["2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"]),
        "addTags": st.lists(st.sampled_from(["t1", "t2"]), max_size=1),
        "removeTags": st.lists(st.sampled_from(["t1", "t2"]), max_size=1),
    },
    optional={
        "email": st.sampled_from(["a@x.co", "b@x.co", "c@x.co", "d@x.co"]),
        "phoneNumber": st.sampled_from(["+3591111", "+3592222", "+3593333"]),
    },
).filter(lambda upsert: "email" in upsert or "phoneNumber" in upsert)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(events, min_size=1, max_size=8)),
        st.tuples(st.just("upsert"), st.lists(upserts, min_size=1, max_size=4)),
        st.tuples(
            st.just("erase"),
            st.sampled_from([("email", "a@x.co"), ("phoneNumber", "+3592222")]),
        ),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def stores(settings: Settings) -> Iterator[list[Storage]]:
    """One storage per worker: its own connections, as separate processes would have."""
    opened = [open_storage(settings) for _ in range(WORKERS + 1)]
    yield opened
    for store in opened:
        store.close()


def new_account(store: Storage) -> int:
    secret = store.create_key(f"acct-{time.monotonic_ns()}", now_ms())[1]
    principal = store.find_key(hash_secret(secret))
    assert principal is not None
    return principal.account_id


def run(store: Storage, account: int, operation: tuple[str, Any]) -> None:
    kind, what = operation
    if kind == "append":
        batch = msgspec.json.encode({"events": what})
        accepted = validator.validate(batch, now_ms())
        asyncio.run(store.append(account, now_ms(), accepted))
    elif kind == "upsert":
        body = msgspec.json.encode({"profiles": what})
        asyncio.run(store.append(account, now_ms(), upsert_validator.validate(body, now_ms())))
    else:
        identifier_kind, value = what
        asyncio.run(store.erase_person(account, identifier_kind, value, fold_everything))


def profiles(database_url: str, account: int) -> dict[Any, dict[str, Any]]:
    query = "SELECT id, state FROM profiles WHERE account_id = ?"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            rows = connection.execute(query, (account,)).fetchall()
    else:
        import psycopg

        with psycopg.connect(database_url) as pg:
            rows = pg.execute(query.replace("?", "%s"), (account,)).fetchall()
    return by_people({pid: msgspec.json.decode(state, type=ProfileState) for pid, state in rows})


@contextmanager
def folding(main: Storage, worker_stores: list[Storage], step: int) -> Iterator[None]:
    """Fold workers on their own connections run through the block and until nothing is
    left to fold; none of them met an error."""
    workers = [
        FoldWorker(store, batch_size=step, idle_poll_seconds=0.002) for store in worker_stores
    ]
    for worker in workers:
        worker.start()
    try:
        yield
        deadline = time.monotonic() + 60
        while main.pending_batches(1):
            assert time.monotonic() < deadline, "the workers did not fold everything"
            time.sleep(0.01)
    finally:
        for worker in workers:
            worker.stop()
    assert all(worker.health.last_error is None for worker in workers)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=operations, step=st.integers(min_value=1, max_value=4))
def test_concurrent_workers_make_the_profiles_of_one_serial_fold(
    settings: Settings, stores: list[Storage], plan: list[tuple[str, Any]], step: int
) -> None:
    main, worker_stores = stores[0], stores[1:]
    parallel, serial = new_account(main), new_account(main)

    with folding(main, worker_stores, step):
        for operation in plan:
            run(main, parallel, operation)

    fold = FoldService(main)
    for operation in plan:
        run(main, serial, operation)
        while fold.fold_pending(1_000):
            pass

    assert profiles(settings.database_url, parallel) == profiles(settings.database_url, serial)


def test_workers_folding_one_person_at_once_lose_none_of_their_events(
    settings: Settings, stores: list[Storage]
) -> None:
    main, worker_stores = stores[0], stores[1:]
    account = new_account(main)
    people = [{"email": "one@x.co"}, {"phoneNumber": "+3591111"}]
    for round_ in range(10):  # the two people, linked half-way through
        batch = [{"action": "view", **people[i % 2]} for i in range(20)]
        if round_ == 5:
            batch.append({"action": "link", "email": "one@x.co", "phoneNumber": "+3591111"})
        run(main, account, ("append", batch))
    with folding(main, worker_stores, step=1):
        pass
    [person] = profiles(settings.database_url, account).values()
    assert person["eventCount"] == 201
