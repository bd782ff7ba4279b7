"""Backpressure keeps the promise "live within EVENTFOLD_MAX_FOLD_LAG_SECONDS": ingest
answers 503 with Retry-After before an accepted event would wait longer for the fold,
and 202 again once the fold has caught up; with NATS the backlog is counted in events."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.nats_cluster import NatsCluster

from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.validation import BatchValidator
from eventfold.errors import Overloaded
from eventfold.services.fold import FoldService
from eventfold.services.fold_lag import FoldLagGauge
from eventfold.services.ingest import IngestService
from eventfold.storage.base import FoldLag, Principal, Storage
from tests.databases import fresh_database
from tests.servers import Served, served

BOUND_SECONDS = 2.0
# What the servers under test run with: a short bound, the fold in no server.
STOPPED_FOLD = {
    "EVENTFOLD_MAX_FOLD_LAG_SECONDS": str(BOUND_SECONDS),
    "EVENTFOLD_FOLD_IN_SERVER": "false",
}


# --- the fold's rate and the predicted wait ----------------------------------------------


class ScriptedBacklog:
    """A backlog of ``events`` unfolded events, the oldest accepted ``seconds`` ago."""

    def __init__(self) -> None:
        self.events = 0
        self.seconds = 0.0

    async def backlog(self, now_ms: int) -> FoldLag:
        return FoldLag(self.events, self.seconds)


class Clock:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def monotonic(self) -> float:
        return self.seconds

    def wall_ms(self) -> int:
        return round(self.seconds * 1000)


class Fold:
    """A gauge over a scripted backlog: readings every 0.5 s, this process accepting
    ``accepted_per_reading`` events between them and the fold folding ``folded``."""

    def __init__(self) -> None:
        self.backlog, self.clock = ScriptedBacklog(), Clock(100)
        self.gauge = FoldLagGauge(self.backlog, 0.5, self.clock.monotonic, self.clock.wall_ms)  # type: ignore[arg-type]

    def run(self, readings: int, accepted: int, folded: int) -> float | None:
        """The predicted wait after the last of ``readings`` readings."""

        async def read() -> float | None:
            wait = None
            for _ in range(readings):
                self.clock.seconds += 0.5
                wait = (await self.gauge.outlook()).predicted_wait_seconds
                self.gauge.accepted(accepted)
                self.backlog.events = max(0, self.backlog.events + accepted - folded)
                self.backlog.seconds += 0.5
            return wait

        return asyncio.run(read())

    def predicted_wait(self, after_seconds: float = 0.0) -> float | None:
        async def outlook() -> float | None:
            self.clock.seconds += after_seconds
            return (await self.gauge.outlook()).predicted_wait_seconds

        return asyncio.run(outlook())


def test_an_event_accepted_now_waits_for_the_events_ahead_at_the_folds_rate() -> None:
    fold = Fold()
    fold.backlog.events = 4_000
    # 2,000 events accepted and 500 folded each half second: 1,000 events/s.
    assert fold.run(readings=1, accepted=2_000, folded=500) is None  # no rate yet
    fold.run(readings=4, accepted=2_000, folded=500)
    # The last reading counted 10,000 events; 2,000 were accepted since: 12 s to fold.
    assert fold.predicted_wait() == pytest.approx(12.0)
    # A quarter of a second later, 250 of them are folded.
    assert fold.predicted_wait(after_seconds=0.25) == pytest.approx(11.75)


def test_every_event_accepted_since_the_last_reading_counts_at_once() -> None:
    fold = Fold()
    fold.backlog.events = 1_000
    fold.run(readings=4, accepted=500, folded=500)
    before = fold.predicted_wait()
    fold.gauge.accepted(3_000)  # a burst of batches between two readings
    assert fold.predicted_wait() == pytest.approx(before + 3.0)  # type: ignore[operator]


def test_a_fold_that_folds_nothing_has_no_rate_to_predict_from() -> None:
    fold = Fold()
    fold.backlog.events = 1_000
    assert fold.run(readings=4, accepted=500, folded=0) is None
    assert fold.predicted_wait() is None


class CountedBacklog(ScriptedBacklog):
    """A backlog whose database also counts the events every fold loop has folded."""

    def __init__(self) -> None:
        super().__init__()
        self.folded = 0

    async def backlog(self, now_ms: int) -> FoldLag:
        return FoldLag(self.events, self.seconds, folded=self.folded)


@pytest.mark.parametrize(("counted", "expected_wait"), [(True, 2.75), (False, 5.5)])
def test_another_api_nodes_acceptances_do_not_lower_the_folds_measured_rate(
    counted: bool, expected_wait: float
) -> None:
    """Two API nodes each accept 500 events a half second and the fold folds 1,000
    (2,000 events/s), the backlog holding at 5,000. Counting what was folded, this node
    measures 2,000 events/s; from the fall of the backlog and its own acceptances alone
    (a log that keeps no count) it measures half, and predicts twice the wait."""
    backlog = CountedBacklog() if counted else ScriptedBacklog()
    clock = Clock(100)
    gauge = FoldLagGauge(backlog, 0.5, clock.monotonic, clock.wall_ms)  # type: ignore[arg-type]
    backlog.events = 5_000

    async def read() -> float | None:
        wait = None
        for _ in range(5):
            clock.seconds += 0.5
            wait = (await gauge.outlook()).predicted_wait_seconds
            gauge.accepted(500)  # this node; the other node's 500 it never sees
            if isinstance(backlog, CountedBacklog):
                backlog.folded += 1_000
        return wait

    asyncio.run(read())
    # 5,000 ahead at the last reading, plus this node's 500 since.
    assert asyncio.run(gauge.outlook()).predicted_wait_seconds == pytest.approx(expected_wait)


def test_the_database_counts_the_events_every_fold_loop_folded(
    storage: Storage, account_id: int
) -> None:
    validator = BatchValidator(Limits())
    body = b'{"events": [{"action": "a", "email": "a@b.co"}, {"action": "b", "email": "c@d.co"}]}'
    before = storage.fold_lag(now_ms()).folded
    assert before is not None
    for _ in range(3):
        asyncio.run(storage.append(account_id, now_ms(), validator.validate(body, now_ms())))
    assert storage.fold_lag(now_ms()).folded == before  # accepted, not folded yet
    assert FoldService(storage).fold_pending(100) == 6
    assert storage.fold_lag(now_ms()).folded == before + 6


def test_the_folds_rate_carries_over_to_the_next_backlog() -> None:
    fold = Fold()
    fold.backlog.events = 3_000
    fold.run(readings=4, accepted=0, folded=750)  # 1,500 events/s, down to nothing
    fold.run(readings=3, accepted=0, folded=0)  # no backlog: nothing to measure
    fold.gauge.accepted(6_000)
    assert fold.predicted_wait() == pytest.approx(4.0)


class AppendedBatches(ScriptedBacklog):
    """The scripted backlog, as the event log ingest appends to."""

    def __init__(self) -> None:
        super().__init__()
        self.appended = 0

    async def append(self, *batch: object) -> bool:
        self.appended += 1
        return True


def test_ingest_refuses_once_an_event_accepted_now_would_wait_past_30_percent_of_the_bound() -> (
    None
):
    log, clock = AppendedBatches(), Clock(100)
    gauge = FoldLagGauge(log, 0.5, clock.monotonic, clock.wall_ms)  # type: ignore[arg-type]
    validator = BatchValidator(Limits())
    upserts = UpsertValidator(Limits(), validator.types)
    ingest = IngestService(log, validator, gauge, 3600, 10**6, 10.0, upserts)  # type: ignore[arg-type]
    principal = Principal("key", 1, "acme")
    batch = b'{"events": [%s]}' % b", ".join([b'{"action": "view", "email": "a@b.co"}'] * 1000)

    async def scenario() -> None:
        # The fold folds 1,000 events a second, and the backlog grows by 500 events each
        # half second: accepted while an event accepted now would wait at most 3 s (30 %
        # of the bound).
        log.events, log.seconds = 1_000, 0.2
        for _ in range(5):
            clock.seconds += 0.5
            await ingest.accept_batch(principal, batch)
            log.events += 1_000 - 500
            log.seconds += 0.3
        # The next reading counts 3,500 events ahead: 3.5 s of the fold's work.
        clock.seconds += 0.5
        with pytest.raises(Overloaded, match=r"3\.5 s behind.*nothing was stored") as refused:
            await ingest.accept_batch(principal, batch)
        assert refused.value.retry_after == 1
        assert log.appended == 5  # nothing of the refused batch
        # Half a second later 3 s of work are ahead: one batch is accepted, and as it
        # counts at once, the next batch before the next reading is refused.
        log.events -= 500
        clock.seconds += 0.5
        await ingest.accept_batch(principal, batch)
        with pytest.raises(Overloaded, match=r"4\.0 s behind"):
            await ingest.accept_batch(principal, batch)

    asyncio.run(scenario())


# --- servers with the fold stopped, then caught up ---------------------------------------


@dataclass
class Answer:
    status: int
    retry_after: str | None
    body: dict[str, Any]
    at: float


def post(server: Served, events: int, person: str) -> Answer:
    batch = [
        {"action": "view", "email": f"{person}-{n:04d}@backpressure.test"} for n in range(events)
    ]
    answer = httpx2.post(
        f"{server.url}/api/v0/events",
        json={"events": batch},
        headers={"Authorization": f"Bearer {server.secret}"},
        timeout=30,
    )
    return Answer(
        answer.status_code, answer.headers.get("retry-after"), answer.json(), time.monotonic()
    )


def lag(server: Served) -> dict[str, Any]:
    found: dict[str, Any] = httpx2.get(f"{server.url}/healthz", timeout=5).json()["lag"]
    return found


def settled_lag(server: Served) -> dict[str, Any]:
    """The lag as read after every answered request (a reading is reused for 0.5 s)."""
    time.sleep(0.6)
    return lag(server)


def post_until_refused(server: Served, events: int = 10) -> tuple[list[Answer], Answer]:
    """Posts a batch every 0.1 s while the fold is stopped: the 202s, then the first 503."""
    accepted: list[Answer] = []
    deadline = time.monotonic() + 10 * BOUND_SECONDS
    while time.monotonic() < deadline:
        answer = post(server, events, uuid.uuid4().hex[:8])
        if answer.status != 202:
            assert answer.status == 503, answer.body
            return accepted, answer
        accepted.append(answer)
        time.sleep(0.1)
    raise AssertionError("ingest went on accepting while the fold was stopped")


def assert_refused_within_the_bound(accepted: list[Answer], refused: Answer) -> None:
    assert accepted, "the first batch was refused"
    # Refused before the first accepted batch had waited for the bound, not after.
    assert refused.at - accepted[0].at < BOUND_SECONDS
    assert refused.retry_after is not None
    assert 1 <= int(refused.retry_after) <= BOUND_SECONDS
    message = refused.body["message"]
    assert "s behind" in message
    assert "nothing was stored" in message


def wait_for_no_lag(server: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (lag(server) or {"events": 1})["events"]:
        assert time.monotonic() < deadline, "the fold did not catch up"
        time.sleep(0.1)


def accepted_again_soon(server: Served) -> None:
    deadline = time.monotonic() + 3
    while (answer := post(server, 1, "after")).status != 202:
        assert answer.status == 503, answer.body
        assert time.monotonic() < deadline, answer.body
        time.sleep(0.1)


@contextmanager
def running_worker(env: dict[str, str], *args: str) -> Iterator[None]:
    """An `eventfold worker` for the block: the fold, started."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "eventfold", "worker", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)


@pytest.mark.slow
def test_with_the_fold_stopped_ingest_refuses_before_the_bound_and_accepts_once_it_caught_up(
    database_url: str, tmp_path: Path
) -> None:
    with served(tmp_path, STOPPED_FOLD, ("--database", database_url)) as server:
        accepted, refused = post_until_refused(server)
        assert_refused_within_the_bound(accepted, refused)
        assert settled_lag(server)["events"] == 10 * len(accepted)  # nothing of the 503
        with running_worker(STOPPED_FOLD, "--database", database_url):
            wait_for_no_lag(server)
            accepted_again_soon(server)


# --- NATS: the backlog in the stream is counted in events ----------------------------------


@pytest.fixture(scope="module")
def nats(nats_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path_factory.mktemp("nats"), nats_binary, size=1).start()
    yield started
    started.stop()


@pytest.mark.slow
def test_with_nats_the_stream_counts_events_and_a_stopped_fold_gets_the_same_503(
    nats: NatsCluster, tmp_path: Path
) -> None:
    with fresh_database("postgres", tmp_path) as database_url:
        env = {
            **STOPPED_FOLD,
            "EVENTFOLD_DATABASE_URL": database_url,
            "EVENTFOLD_NATS_STREAM": f"T{uuid.uuid4().hex[:10]}",
        }
        with served(tmp_path, env, ("--log", nats.url)) as server:
            accepted, refused = post_until_refused(server, events=40)
            assert_refused_within_the_bound(accepted, refused)
            # Each batch in the stream counts its 40 events, not one.
            assert settled_lag(server)["events"] == 40 * len(accepted)
            with running_worker(env, "--log", nats.url):
                wait_for_no_lag(server)
                accepted_again_soon(server)
