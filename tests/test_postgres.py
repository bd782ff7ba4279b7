"""What only PostgreSQL deployments do: several workers, lost connections, moving an
SQLite database over. (The shared suite runs on PostgreSQL through conftest.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import psycopg
import pytest
from bench.batches import realistic_event
from bench.processes import read_all_events
from bench.processes import wait_for_fold as wait_for_served_fold
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.cli import main
from eventfold.clock import now_ms
from eventfold.domain.fold_input import FoldInput
from eventfold.domain.profile import ProfileState, profile_view
from eventfold.domain.profile_book import ProfileBook
from eventfold.http.app import create_app
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.postgres import connect
from tests.conftest import auth, post_events, wait_for_fold
from tests.databases import fresh_database


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", tmp_path) as url:
        yield url


def people(url: str) -> dict[Any, dict[str, Any]]:
    """Every stored profile keyed by its identifiers, without the eventfold id."""
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT state FROM profiles").fetchall()
    return _by_people([msgspec.json.decode(row[0], type=ProfileState) for row in rows])


def _by_people(states: list[ProfileState]) -> dict[Any, dict[str, Any]]:
    found = {}
    for state in states:
        view = msgspec.to_builtins(profile_view("-", state))
        del view["id"]
        found[(tuple(view["emails"]), tuple(view["phoneNumbers"]), tuple(view["profileIds"]))] = (
            view
        )
    return found


def test_two_workers_folding_one_log_give_the_profiles_of_one(postgres_url: str) -> None:
    settings = Settings(
        fold_process=False,
        database_url=postgres_url,
        fold_in_server=False,
        fold_lag_cache_seconds=0.001,
    )
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    with TestClient(create_app(build_services(settings, storage))) as client:
        import random

        rng = random.Random(7)
        for _ in range(40):
            batch = [realistic_event(rng, people=150) for _ in range(200)]
            for event in rng.sample(batch, 10):  # links between email and phone people
                event["email"] = f"customer{rng.randrange(150)}@shop.example"
                event["phoneNumber"] = f"+3598{rng.randrange(150):08d}"
            post_events(client, secret, *batch)
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "eventfold", "worker", "--database", postgres_url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        try:
            wait_for_fold(client, timeout=120)
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=20)
    storage.close()

    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT seq, account_id, occurred_at, body FROM events ORDER BY seq"
        ).fetchall()
    last = 0

    def allocate() -> int:
        nonlocal last
        last += 1
        return last

    book = ProfileBook({}, {}, allocate)
    for seq, account, at, body in rows:
        book.fold(account, msgspec.json.decode(body, type=FoldInput), at, seq)
    book.settle()
    assert len(rows) == 8_000
    assert people(postgres_url) == _by_people(list(book.states.values()))


@pytest.mark.slow
def test_every_202_survives_the_database_dropping_connections_mid_load(
    postgres_url: str, tmp_path: Path
) -> None:
    from tests.servers import served

    name = postgres_url.rsplit("/", 1)[1]
    accepted: list[list[str]] = []
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    with served(tmp_path, env={"EVENTFOLD_DATABASE_URL": postgres_url}) as server:

        def post_until_stopped(client_number: int) -> None:
            sent = 0
            with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as http:
                while not stop.is_set():
                    ids = [f"{client_number}-{sent}-{i}" for i in range(20)]
                    sent += 1
                    body = {
                        "events": [
                            {"action": "a", "email": f"p{i}@b.co", "n": n}
                            for i, n in enumerate(ids)
                        ]
                    }
                    try:
                        status = http.post("/api/v0/events", content=json.dumps(body)).status_code
                    except httpx2.HTTPError:
                        status = 0
                    statuses[status] += 1
                    if status == 202:
                        accepted.append(ids)

        clients = [threading.Thread(target=post_until_stopped, args=(n,)) for n in range(3)]
        for thread in clients:
            thread.start()
        with psycopg.connect(
            f"{postgres_url.rsplit('/', 1)[0]}/postgres", autocommit=True
        ) as admin:
            for _ in range(3):
                time.sleep(0.7)
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
        time.sleep(0.7)
        stop.set()
        for thread in clients:
            thread.join()
        wait_for_served_fold(server.url)
        stored = Counter(event["n"] for event in read_all_events(server.url, server.secret))
    print(dict(statuses))
    assert statuses[503] > 0, "the terminations should have been felt"
    assert statuses[202] > 0
    assert all(stored[n] == 1 for batch in accepted for n in batch)
    assert max(stored.values()) == 1


def test_an_sqlite_database_moves_to_postgresql_with_eventfold_migrate(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    settings = Settings(fold_process=False, database_url=sqlite_url)
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms(), rate_limit=1000)[1]
    with TestClient(create_app(build_services(settings, storage))) as client:
        viewers = {"key": "viewers", "name": "v", "match": {"event": {"action": "view"}}}
        assert (
            client.post("/api/v0/segments", json=viewers, headers=auth(secret)).status_code == 201
        )
        post_events(
            client,
            secret,
            {"action": "view", "email": "a@b.co", "profileId": "p1"},
            {"action": "buy", "phoneNumber": "+359888", "email": "a@b.co"},
            {"action": "view", "email": "other@b.co"},
        )
        wait_for_fold(client)
        before_events = client.get("/api/v0/events", headers=auth(secret)).json()
        before_feed = client.get("/api/v0/segments/viewers/changes", headers=auth(secret)).json()
        assert len(before_feed["changes"]) == 2
        before_profile = client.get(
            "/api/v0/profiles", params={"email": "a@b.co"}, headers=auth(secret)
        ).json()
    storage.close()

    assert main(["migrate", "--from", sqlite_url, "--database", postgres_url]) == 0
    assert "events: 3 rows" in capsys.readouterr().out

    settings = Settings(fold_process=False, database_url=postgres_url)
    storage = open_storage(settings)
    with TestClient(create_app(build_services(settings, storage))) as client:
        assert client.get("/api/v0/events", headers=auth(secret)).json() == before_events
        assert (
            client.get(
                "/api/v0/profiles", params={"phoneNumber": "+359888"}, headers=auth(secret)
            ).json()
            == before_profile
        )
        post_events(client, secret, {"action": "after", "email": "a@b.co"})
        wait_for_fold(client)
        after = client.get(
            "/api/v0/profiles", params={"email": "a@b.co"}, headers=auth(secret)
        ).json()
        assert after["id"] == before_profile["id"]
        assert after["eventCount"] == 3
        assert after["segments"] == ["viewers"]
        feed = client.get("/api/v0/segments/viewers/changes", headers=auth(secret)).json()
        assert feed == before_feed  # the same positions, and the cursor still valid
        more = {"key": "more", "name": "m", "match": {"event": {"action": "after"}}}
        assert client.post("/api/v0/segments", json=more, headers=auth(secret)).status_code == 201
        newest = client.get("/api/v0/events", params={"limit": 1}, headers=auth(secret)).json()
        assert newest["events"][0]["action"] == "after"
    assert [r.rate_limit for r in storage.list_keys()] == [1000]
    storage.close()
    assert main(["migrate", "--from", sqlite_url, "--database", postgres_url]) == 2
    assert "already holds data" in capsys.readouterr().err


def test_a_schema_newer_than_the_code_is_refused(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    open_storage(Settings(database_url=database_url)).close()
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            connection.execute("INSERT INTO schema_version VALUES (99)")
    else:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("INSERT INTO schema_version VALUES (99)")
    assert main(["migrate", "--database", database_url]) == 2
    assert "schema is version 99, newer than this eventfold knows" in capsys.readouterr().err


def test_a_fold_in_another_process_is_woken_by_an_appends_commit(postgres_url: str) -> None:
    from bench.segments import append, principal_of

    settings = Settings(database_url=postgres_url, fold_in_server=False)
    appender, waiter = open_storage(settings), open_storage(settings)
    try:
        principal = principal_of(appender)
        started = time.monotonic()
        waiter.wait_for_events(0.3)  # nothing appended: it waits the whole timeout
        assert time.monotonic() - started >= 0.3

        def append_later() -> None:
            time.sleep(0.2)
            append(appender, principal, 100, 10, seed=1)

        thread = threading.Thread(target=append_later)
        thread.start()
        started = time.monotonic()
        waiter.wait_for_events(30)
        waited = time.monotonic() - started
        thread.join()
        assert 0.15 <= waited < 10, waited  # told by NOTIFY, long before 30 s
    finally:
        appender.close()
        waiter.close()


def test_connections_give_up_on_a_silent_host_unless_the_url_says_otherwise(
    postgres_url: str,
) -> None:
    """The dead-peer options (tests/test_postgres_dead_host.py shows them at work) are
    set on every connection, and a URL's own values win."""
    with connect(postgres_url) as connection:
        given = connection.info.get_parameters()
    assert (given["tcp_user_timeout"], given["keepalives_idle"]) == ("15000", "10")
    with connect(f"{postgres_url}?tcp_user_timeout=4000&keepalives_idle=3") as connection:
        given = connection.info.get_parameters()
    assert (given["tcp_user_timeout"], given["keepalives_idle"]) == ("4000", "3")
