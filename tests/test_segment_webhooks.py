"""Segments fire webhooks: a person entering or leaving a segment is a signed
``segment.entered`` / ``segment.exited`` message, written in the transaction that changed
the membership, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.settings import Settings
from tests.conftest import auth, post_events
from tests.receivers import receiving
from tests.test_webhook_delivery import subscribe, verify, wait_until


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,  # the receiver listens on 127.0.0.1
        webhook_retry_seconds="0,0.2",
        segment_timer_seconds=0.2,
    )


def define(client: TestClient, secret: str, action: str, method: str = "POST") -> None:
    body: dict[str, Any] = {
        "key": "buyers",
        "name": "Buyers",
        "match": {"event": {"action": action}},
    }
    path = "/api/v0/segments" if method == "POST" else "/api/v0/segments/buyers"
    response = client.request(method, path, json=body, headers=auth(secret))
    assert response.status_code in (200, 201), response.text
    wait_until(
        lambda: (
            client.get("/api/v0/segments/buyers", headers=auth(secret)).json()["status"] == "ready"
        )
    )


def test_entering_and_leaving_a_segment_are_signed_messages(
    client: TestClient, secret: str
) -> None:
    define(client, secret, "purchase")
    with receiving() as receiver:
        webhook = subscribe(
            client,
            secret,
            receiver.url,
            types=["segment.entered", "segment.exited"],
            segments=["buyers"],
        )
        post_events(client, secret, {"action": "view", "email": "ana@example.com"})
        post_events(client, secret, {"action": "purchase", "email": "ana@example.com"})
        [entered] = receiver.wait_for(1)
        define(client, secret, "refund", method="PUT")  # Ana bought, never refunded: out
        [_, exited] = receiver.wait_for(2)
    first, second = verify(webhook["secret"], entered), verify(webhook["secret"], exited)
    assert [first["type"], second["type"]] == ["segment.entered", "segment.exited"]
    assert first["data"]["segment"] == second["data"]["segment"] == "buyers"
    assert first["data"]["profile"]["emails"] == ["ana@example.com"]
    assert second["sequence"] == first["sequence"] + 1
    assert entered.headers["webhook-id"] != exited.headers["webhook-id"]
    # Only the segment types were asked for: the events themselves sent nothing.
    assert len(receiver.requests) == 2
