"""The JetStream log between API nodes and workers, on real nats-server clusters started
from docs/nats-cluster.conf: nothing 202'd is lost or folded twice when a NATS node or a
worker is SIGKILLed, erasure reaches batches still in the stream, retries are recognised."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx2
import psycopg
import pytest
from bench.nats_cluster import NatsCluster

from tests.databases import fresh_database
from tests.servers import Served, served

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(nats_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One 3-node cluster for the tests that do not kill its nodes."""
    started = NatsCluster(tmp_path_factory.mktemp("nats"), nats_binary).start()
    yield started
    started.stop()


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


def log_env(postgres_url: str, fold_in_server: bool = True) -> dict[str, str]:
    return {
        "EVENTFOLD_DATABASE_URL": postgres_url,
        # A stream per test: the tests share a cluster.
        "EVENTFOLD_NATS_STREAM": f"T{uuid.uuid4().hex[:10]}",
        "EVENTFOLD_NATS_ACK_WAIT_SECONDS": "3",
        "EVENTFOLD_FOLD_IN_SERVER": str(fold_in_server).lower(),
    }


def post(server: Served, events: Sequence[Mapping[str, object]], key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {server.secret}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = httpx2.post(
        f"{server.url}/api/v0/events", json={"events": events}, headers=headers, timeout=30
    )
    return answer.status_code


def profile(server: Served, email: str) -> dict[str, object] | None:
    answer = httpx2.get(
        f"{server.url}/api/v0/profiles",
        params={"email": email},
        headers={"Authorization": f"Bearer {server.secret}"},
    )
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


def wait_for(condition: object, timeout: float = 60) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the fold"
        time.sleep(0.1)


def stored_emails(postgres_url: str) -> Counter[str]:
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT email, count(*) FROM events GROUP BY email").fetchall()
    return Counter({email: count for email, count in rows})


def folded_counts(postgres_url: str) -> tuple[int, Counter[str]]:
    """Unfolded events left, and each profile's eventCount by its first email."""
    with psycopg.connect(postgres_url) as connection:
        unfolded = connection.execute(
            "SELECT coalesce(sum(event_count), 0) FROM batches"
        ).fetchone()
        states = connection.execute("SELECT state FROM profiles").fetchall()
    counts: Counter[str] = Counter()
    for (state,) in states:
        decoded = json.loads(bytes(state))
        counts[decoded["emails"][0]] += decoded.get("event_count", 0)
    assert unfolded is not None
    return int(unfolded[0]), counts


def total_stored(postgres_url: str) -> int:
    return sum(stored_emails(postgres_url).values())


@contextmanager
def running_worker(log_url: str, env: dict[str, str], folder: Path) -> Iterator[None]:
    """An `eventfold worker` for the block, stopped with SIGTERM (and exiting 0) after."""
    worker = start_worker(log_url, env, folder)
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def start_worker(log_url: str, env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    with (folder / "worker.log").open("ab") as output:  # the worker keeps it open
        return subprocess.Popen(
            [sys.executable, "-m", "eventfold", "worker", "--log", log_url],
            env={**os.environ, **env},
            stdout=output,
            stderr=output,
        )


def test_batches_go_through_jetstream_into_profiles(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    env = log_env(postgres_url)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        assert "through the log nats://" in server.banner
        assert post(server, [{"action": "view", "email": "Ann@Example.com"}] * 3) == 202
        wait_for(lambda: profile(server, "ann@example.com") is not None)
        found = profile(server, "ann@example.com")
        assert found is not None
        assert found["eventCount"] == 3
        health = httpx2.get(f"{server.url}/healthz").json()
        assert health["lag"]["events"] == 0


def test_repeated_idempotency_key_is_stored_once_and_another_body_is_refused(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    env = log_env(postgres_url)
    first = [{"action": "view", "email": "bo@example.com"}]
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        assert post(server, first, key="batch-1") == 202
        assert post(server, first, key="batch-1") == 202  # still in the stream
        assert post(server, [{"action": "buy", "email": "bo@example.com"}], key="batch-1") == 422
        wait_for(lambda: profile(server, "bo@example.com") is not None)
        time.sleep(0.5)
        assert post(server, first, key="batch-1") == 202  # applied by now
        assert post(server, [{"action": "x", "email": "bo@example.com"}], key="batch-1") == 422
        time.sleep(0.5)
        found = profile(server, "bo@example.com")
        assert found is not None
        assert found["eventCount"] == 1
    assert stored_emails(postgres_url) == Counter({"bo@example.com": 1})


def test_erasure_reaches_batches_still_in_the_stream(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        gone = [{"action": "view", "email": "gone@example.com", "phoneNumber": "+35988000111"}]
        assert post(server, gone * 2) == 202
        assert post(server, [{"action": "view", "phoneNumber": "+35988000111"}]) == 202
        assert post(server, [{"action": "view", "email": "kept@example.com"}]) == 202
        erased = httpx2.delete(
            f"{server.url}/api/v0/profiles",
            params={"email": "gone@example.com"},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert erased.status_code == 202, erased.text
        # Accepted after the erasure: a new profile, with this event only.
        assert post(server, [{"action": "back", "email": "gone@example.com"}]) == 202
        with running_worker(cluster.url, env, tmp_path):
            wait_for(lambda: profile(server, "kept@example.com") is not None)
            wait_for(lambda: profile(server, "gone@example.com") is not None)
        back = profile(server, "gone@example.com")
        assert back is not None
        assert back["eventCount"] == 1
        assert back["phoneNumbers"] == []
        # The phone number was the erased person's too (the earlier batches said so).
        found = httpx2.get(
            f"{server.url}/api/v0/profiles",
            params={"phoneNumber": "+35988000111"},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert found.status_code == 404
    assert stored_emails(postgres_url) == Counter({"gone@example.com": 1, "kept@example.com": 1})


class Load:
    """Client threads posting batches of unique emails; remembers every answer."""

    def __init__(self, server: Served, clients: int = 4, batch: int = 20) -> None:
        self._server = server
        self._batch = batch
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, client: int) -> None:
        headers = {"Authorization": f"Bearer {self._server.secret}"}
        with httpx2.Client(timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                emails = [f"c{client}-b{n}-e{i}@load.test" for i in range(self._batch)]
                n += 1
                events = [{"action": "view", "email": email} for email in emails]
                try:
                    status = http.post(
                        f"{self._server.url}/api/v0/events",
                        json={"events": events},
                        headers=headers,
                    ).status_code
                except httpx2.TransportError:
                    status = 0
                with self._lock:
                    (self.accepted if status == 202 else self.refused).extend(emails)


def assert_exactly_once(postgres_url: str, load: Load) -> None:
    expected = len(load.accepted)
    wait_for(lambda: total_stored(postgres_url) >= expected, timeout=90)
    wait_for(lambda: folded_counts(postgres_url)[0] == 0, timeout=90)
    time.sleep(1)  # anything else that might still arrive, would arrive now
    stored = stored_emails(postgres_url)
    assert all(stored[email] == 1 for email in load.accepted), "lost or duplicated events"
    assert not [email for email in load.refused if stored[email]], "a non-202 was stored"
    assert sum(stored.values()) == expected
    unfolded, counts = folded_counts(postgres_url)
    assert unfolded == 0
    assert counts == Counter(dict.fromkeys(load.accepted, 1))


def test_a_nats_node_killed_mid_load_loses_and_duplicates_nothing(
    nats_binary: str, postgres_url: str, tmp_path: Path
) -> None:
    nats = NatsCluster(tmp_path / "nats", nats_binary).start()
    env = log_env(postgres_url)
    try:
        with served(tmp_path, env, ("--log", nats.url)) as server:
            stream = nats.stream_detail(env["EVENTFOLD_NATS_STREAM"])
            assert stream["config"]["num_replicas"] == 3
            assert stream["config"]["storage"] == "file"
            with Load(server) as load:
                time.sleep(2)
                victim = nats.stream_leader(env["EVENTFOLD_NATS_STREAM"])
                nats.kill_node(victim)
                time.sleep(3)
                nats.start_node(victim)
                time.sleep(3)
            assert len(load.accepted) > 1_000
            assert_exactly_once(postgres_url, load)
            print(f"{len(load.accepted)} events 202, {len(load.refused)} not")  # with -s
    finally:
        nats.stop()


def test_a_worker_killed_mid_fold_and_restarted_folds_everything_exactly_once(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        with Load(server, batch=50) as load:
            time.sleep(4)
        for _ in range(3):
            before = total_stored(postgres_url)
            worker = start_worker(cluster.url, env, tmp_path)
            wait_for(lambda: total_stored(postgres_url) > before)  # noqa: B023
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert total_stored(postgres_url) < len(load.accepted), "kills too late"
        with running_worker(cluster.url, env, tmp_path):
            assert_exactly_once(postgres_url, load)


def test_when_one_of_two_workers_dies_the_other_folds_its_batches(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        with Load(server, batch=50) as load:
            time.sleep(3)
        with running_worker(cluster.url, env, tmp_path):
            doomed = start_worker(cluster.url, env, tmp_path)
            wait_for(lambda: total_stored(postgres_url) > 0)
            doomed.send_signal(signal.SIGKILL)  # holding fetched, unacknowledged batches
            doomed.wait()
            assert total_stored(postgres_url) < len(load.accepted), "too late"
            assert_exactly_once(postgres_url, load)


def test_a_poison_event_from_the_stream_is_quarantined_and_the_rest_folds(
    cluster: NatsCluster, postgres_url: str, tmp_path: Path
) -> None:
    from tests.test_fold_quarantine import POISON, poisoned

    env = log_env(postgres_url)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        poisoning = contextlib.ExitStack()
        poisoning.enter_context(poisoned(postgres_url))
        assert post(server, [{"action": "view", "email": POISON}]) == 202
        assert post(server, [{"action": "view", "email": "fine@example.com"}]) == 202
        wait_for(lambda: profile(server, "fine@example.com") is not None, timeout=10)
        wait_for(lambda: httpx2.get(f"{server.url}/healthz").json()["lag"]["quarantined"] == 1)
        assert profile(server, POISON) is None
        poisoning.close()  # the cause is fixed; the operator retries, with no new batch
        retried = subprocess.run(
            [sys.executable, "-m", "eventfold", "fold", "quarantine", "retry"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        assert retried.returncode == 0, retried.stderr
        wait_for(lambda: profile(server, POISON) is not None, timeout=10)
    assert stored_emails(postgres_url) == Counter({POISON: 1, "fine@example.com": 1})
