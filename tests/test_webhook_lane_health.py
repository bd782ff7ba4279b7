"""A delivery lane that keeps failing shows in the delivery loop's health for as long as
it fails (``failingForSeconds`` grows), although the loop's own polling (and other
endpoints' lanes) go on fine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import delivery_loop
from eventfold.services.webhook_delivery import DeliveryLoop
from eventfold.settings import Settings
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events
from tests.receivers import always, receiving
from tests.test_webhook_delivery import first_status, subscribe, wait_until


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,
        webhook_retry_seconds="0,0.2,0.2",
        webhook_timeout_seconds=1.0,
        webhook_lease_seconds=1.5,
        deliver_in_server=False,  # the test runs the one delivery loop
    )


class RefusedClaims:
    """The real store, except that claiming one endpoint's messages raises (as a fault
    of the database or of eventfold would) while ``refused`` holds its id."""

    def __init__(self, store: Storage) -> None:
        self._store = store
        self.refused: set[str] = set()

    def claim_messages(self, webhook_id: str, *args: Any) -> Any:
        if webhook_id in self.refused:
            raise RuntimeError(f"claims of {webhook_id} refused by the test")
        return self._store.claim_messages(webhook_id, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@contextmanager
def refusing(
    settings: Settings, storage: Storage, webhook_id: str
) -> Iterator[tuple[DeliveryLoop, RefusedClaims]]:
    """A running delivery loop whose claims of this webhook's messages fail."""
    store = RefusedClaims(storage)
    store.refused.add(webhook_id)
    loop = delivery_loop(settings, cast(Storage, store))
    loop.start()
    try:
        yield loop, store
    finally:
        loop.stop()


def test_a_lane_that_keeps_failing_shows_until_it_records_again(
    client: TestClient, secret: str, settings: Settings, storage: Storage
) -> None:
    with receiving(always(200)) as receiver:
        broken = subscribe(client, secret, receiver.url)["id"]
        fine = subscribe(client, secret, receiver.url)["id"]
        with refusing(settings, storage, broken) as (loop, store):
            post_events(client, secret, {"action": "purchase", "email": "ana@example.com"})
            wait_until(lambda: first_status(client, secret, fine) == "delivered")
            wait_until(lambda: loop.health.last_error is not None)
            failing_from = time.monotonic()
            seen: list[str | None] = []
            for _ in range(40):  # two seconds: many polls, and the fine lane, succeed
                seen.append(loop.health.last_error)
                time.sleep(0.05)
            assert all(f"claims of {broken} refused" in (error or "") for error in seen), seen
            # Failing all along, not since the last poll (an alert on it can fire).
            assert loop.health.failing_for() >= time.monotonic() - failing_from - 0.1
            assert loop.health.running is True
            assert first_status(client, secret, broken) == "pending"

            store.refused.clear()  # the fault is gone: the message goes, the error clears
            wait_until(lambda: first_status(client, secret, broken) == "delivered")
            wait_until(lambda: loop.health.last_error is None)
    assert len(receiver.requests) == 2


def test_a_failing_lane_whose_webhook_is_deleted_stops_showing(
    client: TestClient, secret: str, settings: Settings, storage: Storage
) -> None:
    with receiving(always(200)) as receiver:
        broken = subscribe(client, secret, receiver.url)["id"]
        with refusing(settings, storage, broken) as (loop, _):
            post_events(client, secret, {"action": "purchase", "email": "ana@example.com"})
            wait_until(lambda: loop.health.last_error is not None)
            deleted = client.delete(f"/api/v0/webhooks/{broken}", headers=auth(secret))
            assert deleted.status_code == 204, deleted.text
            # No lane runs for it any more, so none can record a result: its failure
            # stops showing two leases (3 s here) after the last one.
            wait_until(lambda: loop.health.last_error is None)
            assert loop.health.failing_for() == 0.0
