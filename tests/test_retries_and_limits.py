"""Idempotent retries, per-key rate limits, backpressure and revocation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.cli import main
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.errors import RateLimited
from eventfold.http.app import create_app
from eventfold.services.fold import FoldService
from eventfold.services.rate_limit import RateLimiter
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage
from tests.conftest import auth, seed_batch, stored
from tests.databases import holding_write_lock

Server = tuple[TestClient, Storage, Settings]


@pytest.fixture
def server(request: pytest.FixtureRequest, database_url: str) -> Iterator[Server]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings = Settings(fold_process=False, database_url=database_url, **overrides)
    storage = open_storage(settings)
    with TestClient(create_app(build_services(settings, storage))) as client:
        yield client, storage, settings
    storage.close()


def post(client: TestClient, secret: str, body: Any, **headers: str) -> Any:
    return client.post("/api/v0/events", json=body, headers={**auth(secret), **headers})


def account_of(storage: Storage, secret: str) -> int:
    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    return principal.account_id


def test_a_repeated_idempotency_key_is_accepted_again_but_stored_once(server: Server) -> None:
    client, storage, _ = server
    secret = storage.create_key("acme", now_ms())[1]
    for _ in range(3):
        response = post(client, secret, seed_batch(), **{"Idempotency-Key": "batch-1"})
        assert response.status_code == 202
        assert response.json() == {}
    assert len(stored(storage, account_of(storage, secret))) == 2
    other = post(client, secret, seed_batch(), **{"Idempotency-Key": "batch-2"})
    assert other.status_code == 202
    assert len(stored(storage, account_of(storage, secret))) == 4


def test_the_same_key_with_another_body_is_422_and_stores_nothing(server: Server) -> None:
    client, storage, _ = server
    secret = storage.create_key("acme", now_ms())[1]
    post(client, secret, seed_batch(), **{"Idempotency-Key": "k"})
    changed = {"events": [{"action": "other", "email": "a@b.co"}]}
    response = post(client, secret, changed, **{"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert "different body" in response.json()["message"]
    assert len(stored(storage, account_of(storage, secret))) == 2


def test_idempotency_keys_are_per_account(server: Server) -> None:
    client, storage, _ = server
    first, second = (storage.create_key(name, now_ms())[1] for name in ("a", "b"))
    for secret in (first, second):
        assert post(client, secret, seed_batch(), **{"Idempotency-Key": "k"}).status_code == 202
        assert len(stored(storage, account_of(storage, secret))) == 2


def test_a_repeat_while_the_first_is_still_in_flight_is_stored_once(server: Server) -> None:
    client, storage, settings = server
    secret = storage.create_key("acme", now_ms())[1]
    answers: list[int] = []

    def send() -> None:
        answers.append(post(client, secret, seed_batch(), **{"Idempotency-Key": "x"}).status_code)

    threads = [threading.Thread(target=send) for _ in range(2)]
    with holding_write_lock(settings.database_url):  # both requests wait inside the writer
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        assert answers == []  # both are in flight
    for thread in threads:
        thread.join()
    assert answers == [202, 202]
    assert len(stored(storage, account_of(storage, secret))) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_keys_must_be_1_to_255_characters(server: Server, key: str) -> None:
    client, storage, _ = server
    secret = storage.create_key("acme", now_ms())[1]
    response = post(client, secret, seed_batch(), **{"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["message"]


def test_a_key_over_its_rate_limit_gets_429_with_retry_after_and_nothing_is_stored(
    server: Server,
) -> None:
    client, storage, _ = server
    secret = storage.create_key("acme", now_ms(), rate_limit=10)[1]
    many = {"events": [{"action": "a", "email": "a@b.co"}] * 30}
    assert post(client, secret, many).status_code == 202  # one batch may overdraw
    response = post(client, secret, seed_batch())
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 2
    assert "10 events per second" in response.json()["message"]
    assert len(stored(storage, account_of(storage, secret))) == 30


def test_rate_limit_can_be_changed_later(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    client, storage, settings = server
    record, secret = storage.create_key("acme", now_ms(), rate_limit=1)
    assert (
        post(client, secret, {"events": [{"action": "a", "email": "a@b.co"}] * 5}).status_code
        == 202
    )
    assert post(client, secret, seed_batch()).status_code == 429
    assert (
        main(["keys", "set-rate-limit", record.id, "none", "--database", settings.database_url])
        == 0
    )
    assert "unlimited" in capsys.readouterr().out
    deadline = time.monotonic() + 3
    while post(client, secret, seed_batch()).status_code != 202:
        assert time.monotonic() < deadline, "the new limit was not applied"
        time.sleep(0.1)


def test_token_bucket_lets_the_average_rate_through() -> None:
    clock = [0.0]
    limiter = RateLimiter(monotonic=lambda: clock[0])
    passed = 0
    for _ in range(100):  # 10 s of a client that tries 5 events every 0.1 s
        try:
            limiter.take("k", rate=20, events=5)
            passed += 5
        except RateLimited:
            pass
        clock[0] += 0.1
    assert 190 <= passed <= 225  # 20 events/s for 10 s, plus the first second's bucket


@pytest.mark.parametrize(
    "server", [{"fold_in_server": False, "max_fold_lag_events": 5}], indirect=True
)
def test_ingest_answers_503_while_the_fold_is_too_far_behind(server: Server) -> None:
    client, storage, _ = server
    secret = storage.create_key("acme", now_ms())[1]
    assert (
        post(client, secret, {"events": [{"action": "a", "email": "a@b.co"}] * 6}).status_code
        == 202
    )
    time.sleep(0.6)  # the lag is read at most every 0.5 s
    response = post(client, secret, seed_batch())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "behind" in response.json()["message"]
    while FoldService(storage).fold_pending(100):
        pass
    time.sleep(0.6)
    assert post(client, secret, seed_batch()).status_code == 202
    assert len(stored(storage, account_of(storage, secret))) == 8


@pytest.mark.parametrize("server", [{"max_pending_events": 10}], indirect=True)
def test_ingest_answers_503_when_the_writer_queue_is_full(server: Server) -> None:
    client, storage, settings = server
    secret = storage.create_key("acme", now_ms())[1]
    first: list[int] = []
    queued = threading.Thread(
        target=lambda: first.append(
            post(client, secret, {"events": [{"action": "a", "email": "a@b.co"}] * 8}).status_code
        )
    )
    with holding_write_lock(settings.database_url):
        queued.start()
        time.sleep(0.3)
        response = post(client, secret, {"events": [{"action": "b", "email": "a@b.co"}] * 5})
        assert response.status_code == 503
        assert "queued" in response.json()["message"]
    queued.join()
    assert first == [202]
    assert [e["action"] for e in stored(storage, account_of(storage, secret))] == ["a"] * 8


def test_a_revoked_key_stops_working_within_a_second(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    client, storage, settings = server
    record, secret = storage.create_key("acme", now_ms())
    assert post(client, secret, seed_batch()).status_code == 202
    assert main(["keys", "revoke", record.id, "--database", settings.database_url]) == 0
    revoked_at = time.monotonic()
    while post(client, secret, seed_batch()).status_code == 202:
        time.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.2
