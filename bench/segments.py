"""Segments' costs, in-process (no HTTP): the fold's rate with 50 realistic segments
defined against none, the backfill's time over N profiles, and the latency from an
event's append to its membership change in the feed.

    python -m bench.segments sqlite|postgres [EVENTS] [PEOPLE] [BACKFILL_PROFILES]

The fold is what bounds the sustainable ingest rate (backpressure holds ingest to the
fold's rate, docs/operations.md), so the fold's rate with and without segments is the
ratio of the sustainable rates.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import msgspec

from bench.batches import ACTIONS, realistic_event
from bench.processes import fresh_postgres_database
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.services.fold import FoldService
from eventfold.services.segment_loops import backfill_step
from eventfold.services.segments import SegmentService
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Principal, Storage

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def realistic_segments(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` definitions of the kinds shops use: purchases in windows, spend, tags,
    locale, recency, combined."""
    rng = random.Random(seed)
    found = []
    for index in range(count):
        action = rng.choice(ACTIONS)
        window = {"last": f"{rng.choice((1, 7, 30, 90))}d"}
        kind = index % 5
        if kind == 0:
            match: Any = {
                "event": {"action": action},
                "count": {"op": "gte", "value": rng.randint(1, 4)},
                "within": window,
            }
        elif kind == 1:
            match = {
                "event": {
                    "action": action,
                    "where": [
                        {
                            "field": "custom.numeric.price",
                            "op": "gte",
                            "value": rng.randint(50, 400),
                        }
                    ],
                },
                "within": window,
            }
        elif kind == 2:
            match = {
                "event": {"action": action},
                "sum": {
                    "field": "custom.numeric.price",
                    "op": "gte",
                    "value": rng.randint(100, 2000),
                },
            }
        elif kind == 3:
            match = {
                "all": [
                    {"profile": "locale", "op": "eq", "value": rng.choice(("bg", "en"))},
                    {"profile": "eventCount", "op": "gte", "value": rng.randint(2, 10)},
                ]
            }
        else:
            match = {
                "all": [
                    {"profile": "lastSeen", "op": "within", "value": window},
                    {"not": {"event": {"action": action}, "within": {"last": "30d"}}},
                ]
            }
        found.append({"key": f"s{index}", "name": f"segment {index}", "match": match})
    return found


@contextmanager
def opened(backend: str) -> Iterator[Storage]:
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/s.db"
        else:
            url = stack.enter_context(fresh_postgres_database(POSTGRES, "bench_segments"))
        storage = open_storage(Settings(database_url=url, fold_in_server=False))
        stack.callback(storage.close)
        yield storage


def principal_of(storage: Storage) -> Principal:
    secret = storage.create_key("bench", now_ms())[1]
    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    return principal


def append(storage: Storage, principal: Principal, events: int, people: int, seed: int) -> None:
    validator, rng = BatchValidator(Limits()), random.Random(seed)

    async def load() -> None:
        for _ in range(events // 100):
            batch = [realistic_event(rng, people=people) for _ in range(100)]
            accepted = validator.validate(msgspec.json.encode({"events": batch}), now_ms())
            await storage.append(principal.account_id, now_ms(), accepted)

    asyncio.run(load())


def fold_rate(backend: str, events: int, people: int, segments: int, returning: int = 0) -> float:
    """Events folded per second with ``segments`` segments defined (and ready); with
    ``returning``, that many events of the same people are folded first (not timed), so
    the timed ones are mostly returning customers'."""
    with opened(backend) as storage:
        principal = principal_of(storage)
        service = SegmentService(storage)
        for body in realistic_segments(segments):
            service.create(principal, msgspec.json.encode(body))
        while backfill_step(storage):
            pass
        fold = FoldService(storage)
        if returning:
            append(storage, principal, returning, people, seed=4)
            while fold.fold_pending(2_000):
                pass
        append(storage, principal, events, people, seed=5)
        started, folded = time.perf_counter(), 0
        while got := fold.fold_pending(2_000):
            folded += got
        return folded / (time.perf_counter() - started)


def backfill_seconds(backend: str, people: int) -> dict[str, float]:
    """Seconds to backfill one new segment over ``people`` profiles (about 3 events each),
    how many members it found, and the slowest append of a one-event batch made every
    50 ms meanwhile (ingest keeps answering)."""
    with opened(backend) as storage:
        principal = principal_of(storage)
        append(storage, principal, people * 3, people, seed=9)
        fold = FoldService(storage)
        while fold.fold_pending(5_000):
            pass
        body = realistic_segments(1)[0]
        SegmentService(storage).create(principal, msgspec.json.encode(body))
        done, appends = threading.Event(), []
        validator = BatchValidator(Limits())

        def ingest() -> None:
            one = msgspec.json.encode({"events": [{"action": "view", "email": "i@x.co"}]})
            while not done.is_set():
                started = time.perf_counter()
                accepted = validator.validate(one, now_ms())
                asyncio.run(storage.append(principal.account_id, now_ms(), accepted))
                appends.append(time.perf_counter() - started)
                time.sleep(0.05)

        writer = threading.Thread(target=ingest)
        writer.start()
        started = time.perf_counter()
        while backfill_step(storage):
            pass
        seconds = time.perf_counter() - started
        done.set()
        writer.join()
        counted = storage.list_segments(principal.account_id)[0][1]
        return {
            "profiles": people,
            "seconds": round(seconds, 2),
            "members": counted,
            "appends_meanwhile": len(appends),
            "slowest_append_ms": round(max(appends, default=0) * 1000, 1),
        }


def feed_latency(backend: str, samples: int) -> list[float]:
    """Seconds from an event's append to its entry in the feed, one event at a time,
    with the fold polling as the fold loop does."""
    with opened(backend) as storage:
        principal = principal_of(storage)
        service = SegmentService(storage)
        service.create(
            principal,
            msgspec.json.encode(
                {"key": "buyers", "name": "b", "match": {"event": {"action": "purchase"}}}
            ),
        )
        while backfill_step(storage):
            pass
        segment_id = storage.list_segments(principal.account_id)[0][0].id
        validator, fold, latencies = BatchValidator(Limits()), FoldService(storage), []
        for index in range(samples):
            body = msgspec.json.encode(
                {"events": [{"action": "purchase", "email": f"p{index}@x.co"}]}
            )
            started = time.perf_counter()
            asyncio.run(
                storage.append(principal.account_id, now_ms(), validator.validate(body, now_ms()))
            )
            while not fold.fold_pending(2_000):
                time.sleep(0.001)
            while len(storage.segment_changes(segment_id, 0, samples + 1)) <= index:
                time.sleep(0.001)
            latencies.append(time.perf_counter() - started)
        return latencies


def run_segments(backend: str, events: int, people: int, backfill_profiles: int) -> dict[str, Any]:
    """Every figure of this module for one backend."""
    none = fold_rate(backend, events, people, 0)
    fifty = fold_rate(backend, events, people, 50)
    latencies = sorted(feed_latency(backend, 200))
    return {
        "fold_events_per_second_no_segments": round(none),
        "fold_events_per_second_50_segments": round(fifty),
        "ratio": round(fifty / none, 2),
        "feed_latency_ms": {
            "median": round(statistics.median(latencies) * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        },
        "backfill": backfill_seconds(backend, backfill_profiles),
    }


def main() -> None:
    backend = sys.argv[1]
    given = [int(argument) for argument in sys.argv[2:5]]
    events, people, profiles = given + [30_000, 10_000, 100_000][len(given) :]
    print(json.dumps(run_segments(backend, events, people, profiles), indent=2))


if __name__ == "__main__":
    main()
