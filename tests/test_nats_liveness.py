"""How soon the JetStream log gets past trouble, on real nats-server clusters: a batch
whose apply failed is fetched again within a second or two (not after the ack wait), a
worker that takes longer than the ack wait keeps its batches, the consumer takes the
configured ack wait, and a client whose NATS node falls silent moves to another node
within seconds (found by python -m bench.cluster: minutes before)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx2
import pytest
from bench.nats_cluster import NatsCluster, NatsNode

from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.errors import StorageUnavailable
from eventfold.settings import Settings
from eventfold.storage.base import FoldEvents, LoggedBatch
from eventfold.storage.nats import CONSUMER, NatsConsumer, NatsPublisher
from eventfold.storage.sqlite import SqliteStorage
from eventfold.worker import LogFoldWorker

pytestmark = pytest.mark.slow

_validator = BatchValidator(Limits())


@pytest.fixture(scope="module")
def single(nats_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path_factory.mktemp("nats"), nats_binary, size=1).start()
    yield started
    started.stop()


class FlakyStorage(SqliteStorage):
    """A database whose applies fail ``failures`` times, then work; or take ``slow``
    seconds the first time."""

    failures = 0
    slow = 0.0
    started_failing: float | None = None
    slow_apply_began: float | None = None
    applied: float | None = None

    def apply_logged(
        self,
        batches: Sequence[LoggedBatch],
        forget_below: int,
        fold: FoldEvents | None = None,
    ) -> int:
        if self.failures:
            self.failures -= 1
            self.started_failing = self.started_failing or time.monotonic()
            raise StorageUnavailable("the database does not answer (a test's)")
        if self.slow:
            self.slow_apply_began = time.monotonic()
            time.sleep(self.slow)
            self.slow = 0.0
        applied = super().apply_logged(batches, forget_below, fold)
        self.applied = self.applied or time.monotonic()
        return applied


def settings_for(cluster: NatsCluster, tmp_path: Path, ack_wait: float) -> Settings:
    return Settings(
        fold_process=False,
        database_url=f"sqlite:///{tmp_path / 'events.db'}",
        log_url=cluster.url,
        nats_stream=f"T{uuid.uuid4().hex[:10]}",
        nats_ack_wait_seconds=ack_wait,
    )


def open_flaky(settings: Settings) -> tuple[FlakyStorage, int]:
    path = settings.database_url.removeprefix("sqlite:///")
    storage = FlakyStorage(Path(path))
    secret = storage.create_key("acme", now_ms())[1]
    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    return storage, principal.account_id


def publish_one(settings: Settings, storage: FlakyStorage, account_id: int) -> None:
    async def publish() -> None:
        log = NatsPublisher(settings, storage)
        await log.connect()
        try:
            events = _validator.validate(b'{"events":[{"action":"view","email":"a@x.co"}]}', 0)
            assert await log.append(account_id, now_ms(), events)
        finally:
            await log.disconnect()

    asyncio.run(publish())


def wait_until(condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def test_a_batch_whose_apply_failed_is_applied_a_second_later_not_after_the_ack_wait(
    single: NatsCluster, tmp_path: Path
) -> None:
    settings = settings_for(single, tmp_path, ack_wait=30)
    storage, account_id = open_flaky(settings)
    storage.failures = 2  # the apply, and the apply without the fold
    publish_one(settings, storage, account_id)
    worker = LogFoldWorker(NatsConsumer(settings), storage)
    worker.start()
    try:
        wait_until(lambda: storage.applied is not None, timeout=15)
        assert storage.count_events(account_id) == 1
    finally:
        worker.stop()
        storage.close()
    assert storage.started_failing is not None
    assert storage.applied is not None
    # Given back with a 1 s delay, fetched after the worker's 1 s pause: not after 30 s.
    assert storage.applied - storage.started_failing < 5


def test_a_worker_that_applies_longer_than_the_ack_wait_keeps_its_batches(
    single: NatsCluster, tmp_path: Path
) -> None:
    settings = settings_for(single, tmp_path, ack_wait=1)
    storage, account_id = open_flaky(settings)
    storage.slow = 4.0
    publish_one(settings, storage, account_id)
    worker = LogFoldWorker(NatsConsumer(settings), storage)
    worker.start()

    async def fetch_meanwhile() -> int:
        """What another worker is given while the first applies (4 ack waits)."""
        other = NatsConsumer(settings)
        await other.connect()
        try:
            given = 0
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                given += len(await other.fetch(10, timeout=0.5))
            return given
        finally:
            await other.disconnect()

    try:
        wait_until(lambda: storage.slow_apply_began is not None, timeout=10)
        assert asyncio.run(fetch_meanwhile()) == 0
        wait_until(lambda: storage.applied is not None, timeout=15)
        assert storage.count_events(account_id) == 1
    finally:
        worker.stop()
        storage.close()


def test_the_consumer_takes_the_configured_ack_wait_also_when_it_was_made_with_another(
    single: NatsCluster, tmp_path: Path
) -> None:
    first = settings_for(single, tmp_path, ack_wait=30)
    second = dataclasses.replace(first, nats_ack_wait_seconds=2.0)
    storage, _ = open_flaky(first)

    async def ack_wait_after_connecting(settings: Settings) -> float:
        log = NatsPublisher(settings, storage)
        await log.connect()
        try:
            js = log._connection.jetstream()
            info = await js.consumer_info(settings.nats_stream, CONSUMER)
            return float(info.config.ack_wait or 0)
        finally:
            await log.disconnect()

    try:
        assert asyncio.run(ack_wait_after_connecting(first)) == 30
        assert asyncio.run(ack_wait_after_connecting(second)) == 2
    finally:
        storage.close()


def connected_node(cluster: NatsCluster) -> NatsNode:
    """The node that holds the client connection named "eventfold"."""
    for node in cluster.nodes:
        answer = httpx2.get(f"http://127.0.0.1:{node.monitor_port}/connz", timeout=2).json()
        if any(c.get("name") == "eventfold" for c in answer.get("connections") or []):
            return node
    raise AssertionError("no node holds the eventfold connection")


# nats-py leaves the stale connection's socket for the garbage collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_an_api_node_whose_nats_node_falls_silent_publishes_through_another_within_seconds(
    nats_binary: str, tmp_path: Path
) -> None:
    cluster = NatsCluster(tmp_path / "nats", nats_binary).start()
    settings = Settings(
        fold_process=False,
        database_url=f"sqlite:///{tmp_path / 'events.db'}",
        log_url=cluster.url,
        nats_stream=f"T{uuid.uuid4().hex[:10]}",
    )
    storage, account_id = open_flaky(settings)
    stopped: list[NatsNode] = []
    events = _validator.validate(b'{"events":[{"action":"view","email":"a@x.co"}]}', 0)

    async def silence_its_node_and_publish() -> float:
        log = NatsPublisher(settings, storage)
        await log.connect()
        try:
            assert await log.append(account_id, now_ms(), events)
            node = connected_node(cluster)
            assert node.process is not None
            # SIGSTOP: its connections stay open and say nothing, as across a cut link.
            node.process.send_signal(signal.SIGSTOP)
            stopped.append(node)
            silenced = time.monotonic()
            while True:
                try:
                    await log.append(account_id, now_ms(), events)
                    return time.monotonic() - silenced
                except StorageUnavailable:
                    assert time.monotonic() - silenced < 60, "still no publish after 60 s"
        finally:
            await log.disconnect()

    try:
        took = asyncio.run(silence_its_node_and_publish())
    finally:
        for node in stopped:
            assert node.process is not None
            node.process.send_signal(signal.SIGCONT)
        cluster.stop()
        storage.close()
    # Pings every 2 s, 2 outstanding: the client leaves after 4-6 s; the stream may
    # need a new leader meanwhile (the nodes elect one in a few seconds). Without the
    # pings it stayed for 4 minutes.
    assert took < 20, f"published again only after {took:.1f} s"
