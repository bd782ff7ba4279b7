"""Webhook deliveries to real HTTP receivers, on both backends: signatures a receiver
verifies with the ``standardwebhooks`` package, retries with one message id, Retry-After,
410, replays, a dead endpoint beside a live one, order per person, and segment changes
written into the outbox in the caller's transaction."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from eventfold.settings import Settings
from tests.conftest import auth, post_events, wait_for_fold
from tests.receivers import Answer, Received, Receiver, always, receiving

TIMEOUT_SECONDS = 1.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,  # the receivers listen on 127.0.0.1
        webhook_retry_seconds="0,0.2,0.2,0.2,0.2",
        webhook_timeout_seconds=TIMEOUT_SECONDS,
        webhook_lease_seconds=3.0,
    )


def subscribe(client: TestClient, secret: str, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "types": ["event.matched"], **fields}
    response = client.post("/api/v0/webhooks", json=body, headers=auth(secret))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(client: TestClient, secret: str, webhook_id: str, query: str = "") -> list[Any]:
    response = client.get(f"/api/v0/webhooks/{webhook_id}/deliveries{query}", headers=auth(secret))
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["deliveries"]
    return found


def first_status(client: TestClient, secret: str, webhook_id: str) -> str | None:
    found = deliveries(client, secret, webhook_id)
    return str(found[0]["status"]) if found else None


def wait_until(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("the condition never held")


def purchase(email: str, **fields: Any) -> dict[str, Any]:
    return {"action": "purchase", "email": email, **fields}


def verify(secret: str, request: Received) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def test_a_receiver_verifies_the_signature_with_standardwebhooks(
    client: TestClient, secret: str
) -> None:
    with receiving() as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com", products=[{"id": "sku-1"}]))
        [request] = receiver.wait_for(1)
    payload = verify(webhook["secret"], request)
    assert request.headers["content-type"] == "application/json"
    assert payload["type"] == "event.matched"
    assert payload["sequence"] == 1
    assert payload["data"]["event"]["action"] == "purchase"
    assert payload["data"]["event"]["foldedIntoProfile"] == payload["data"]["profile"]["id"]
    assert payload["data"]["profile"]["emails"] == ["ana@example.com"]
    assert payload["data"]["profile"]["products"] == {"purchase": ["sku-1"]}
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)
    wait_until(lambda: first_status(client, secret, webhook["id"]) == "delivered")
    [delivery] = deliveries(client, secret, webhook["id"])
    assert delivery["webhookId"] == request.headers["webhook-id"]
    assert [attempt["statusCode"] for attempt in delivery["attempts"]] == [200]
    assert delivery["nextAttemptAt"] is None


def test_a_rotated_secret_and_the_one_before_both_verify(client: TestClient, secret: str) -> None:
    with receiving() as receiver:
        webhook = subscribe(client, secret, receiver.url)
        rotated = client.post(f"/api/v0/webhooks/{webhook['id']}/secret", headers=auth(secret))
        post_events(client, secret, purchase("ana@example.com"))
        [request] = receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verify(webhook["secret"], request) == verify(rotated.json()["secret"], request)


def test_500_three_times_then_200_delivers_one_message_id(client: TestClient, secret: str) -> None:
    with receiving(lambda index, request: Answer(500 if index < 3 else 200)) as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"))
        requests = receiver.wait_for(4)
        wait_until(lambda: first_status(client, secret, webhook["id"]) == "delivered")
        time.sleep(0.5)  # nothing more arrives
        assert len(receiver.requests) == 4
    assert len({request.headers["webhook-id"] for request in requests}) == 1
    assert len({request.body for request in requests}) == 1
    [delivery] = deliveries(client, secret, webhook["id"])
    assert [a["statusCode"] for a in delivery["attempts"]] == [500, 500, 500, 200]


def test_a_message_fails_once_the_schedule_runs_out(client: TestClient, secret: str) -> None:
    with receiving(always(503)) as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"))
        wait_until(lambda: first_status(client, secret, webhook["id"]) == "failed")
        assert len(receiver.requests) == 5  # the test schedule's five attempts
    [failed] = deliveries(client, secret, webhook["id"], "?status=failed")
    assert len(failed["attempts"]) == 5
    assert deliveries(client, secret, webhook["id"], "?status=pending") == []


def test_other_4xx_answers_are_not_retried(client: TestClient, secret: str) -> None:
    with receiving(always(400)) as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"))
        wait_until(lambda: first_status(client, secret, webhook["id"]) == "failed")
        time.sleep(0.5)
        assert len(receiver.requests) == 1
    deliveries_health = client.get("/healthz").json()["deliveries"]
    assert deliveries_health["failed"] == 1
    assert deliveries_health["pending"] == 0
    assert deliveries_health["loop"]["running"] is True
    metrics = client.get("/metrics").text
    assert "eventfold_webhook_failed_messages 1.0" in metrics
    assert 'eventfold_webhook_attempts_total{outcome="refused"}' in metrics


def test_health_shows_how_late_deliveries_are(client: TestClient, secret: str) -> None:
    with receiving(lambda index, request: Answer(200, delay_seconds=2)) as receiver:
        subscribe(client, secret, receiver.url)
        events = [purchase(f"p{n}@example.com") for n in range(8)]  # 4 at a time
        post_events(client, secret, *events)
        receiver.wait_for(4)
        time.sleep(0.5)
        late = client.get("/healthz").json()["deliveries"]
        assert late["pending"] == 8
        assert late["lagSeconds"] >= 0.5  # four wait behind the four in flight
        assert "eventfold_webhook_lag_seconds" in client.get("/metrics").text
        receiver.wait_for(8)


def test_retry_after_is_honoured(client: TestClient, secret: str) -> None:
    def policy(index: int, request: Received) -> Answer:
        return Answer(429, {"Retry-After": "2"}) if index == 0 else Answer(200)

    with receiving(policy) as receiver:
        subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"))
        first, second = receiver.wait_for(2)
    assert second.at - first.at >= 1.9  # the schedule alone would wait 0.2 s


def test_410_disables_the_endpoint(client: TestClient, secret: str) -> None:
    with receiving(always(410)) as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"))
        receiver.wait_for(1)
        path = f"/api/v0/webhooks/{webhook['id']}"
        wait_until(lambda: client.get(path, headers=auth(secret)).json()["status"] == "disabled")
        assert "410" in client.get(path, headers=auth(secret)).json()["disabledReason"]
        post_events(client, secret, purchase("bo@example.com"))
        wait_for_fold(client)
        time.sleep(0.3)
        assert len(receiver.requests) == 1
    [delivery] = deliveries(client, secret, webhook["id"])
    assert delivery["status"] == "failed"


def test_replay_sends_the_same_message_ids_again(client: TestClient, secret: str) -> None:
    with receiving() as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, purchase("ana@example.com"), purchase("bo@example.com"))
        first = receiver.wait_for(2)
        wait_until(
            lambda: (
                [d["status"] for d in deliveries(client, secret, webhook["id"])]
                == ["delivered"] * 2
            )
        )
        response = client.post(
            f"/api/v0/webhooks/{webhook['id']}/replay",
            json={"since": "2000-01-01T00:00:00Z"},
            headers=auth(secret),
        )
        assert response.status_code == 202
        assert response.json() == {"queued": 2}
        again = receiver.wait_for(4)[2:]
    assert sorted(r.headers["webhook-id"] for r in again) == sorted(
        r.headers["webhook-id"] for r in first
    )
    assert {r.body for r in again} == {r.body for r in first}


def test_filters_choose_the_events(client: TestClient, secret: str) -> None:
    with receiving() as receiver:
        subscribe(client, secret, receiver.url, actions=["purchase"])
        post_events(
            client,
            secret,
            {"action": "search", "email": "ana@example.com"},
            purchase("ana@example.com"),
        )
        wait_for_fold(client)
        [request] = receiver.wait_for(1)
        time.sleep(0.3)
        assert len(receiver.requests) == 1
    assert json.loads(request.body)["data"]["event"]["action"] == "purchase"


def test_a_persons_messages_arrive_in_order_even_through_retries(
    client: TestClient, secret: str
) -> None:
    with receiving(lambda index, request: Answer(500 if index < 2 else 200)) as receiver:
        subscribe(client, secret, receiver.url)
        events = [purchase("ana@example.com", tags=[f"t{n}"]) for n in range(5)]
        post_events(client, secret, *events)
        requests = receiver.wait_for(7)
    bodies = [json.loads(request.body) for request in requests]
    delivered = [body["sequence"] for body in bodies[2:]]
    assert [body["sequence"] for body in bodies[:3]] == [1, 1, 1]  # retried before the rest
    assert delivered == [1, 2, 3, 4, 5]
    assert [body["data"]["event"]["tags"] for body in bodies[2:]] == [[f"t{n}"] for n in range(5)]


def _latencies(client: TestClient, secret: str, receiver: Receiver, count: int) -> list[float]:
    """Seconds from each event's 202 to its message's arrival, one event at a time."""
    latencies = []
    for n in range(count):
        before = len(receiver.requests)
        sent = time.time()
        post_events(client, secret, purchase(f"p{n}-{sent}@example.com"))
        arrived = receiver.wait_for(before + 1)[before]
        latencies.append(arrived.at - sent)
    return latencies


def test_a_dead_endpoint_does_not_slow_a_live_one(client: TestClient, secret: str) -> None:
    with (
        receiving() as live,
        receiving(lambda index, request: Answer(200, delay_seconds=30)) as dead,
    ):
        subscribe(client, secret, live.url)
        alone = _latencies(client, secret, live, 15)
        subscribe(client, secret, dead.url)
        beside_dead = _latencies(client, secret, live, 15)
        assert len(dead.requests) >= 4  # the dead endpoint was being tried meanwhile
    # The median, plus the loop's poll period for the noise of a shared machine.
    assert statistics.median(beside_dead) <= 1.2 * statistics.median(alone) + 0.05, (
        alone,
        beside_dead,
    )


def test_a_url_the_http_client_cannot_encode_fails_its_attempts_on_the_schedule(
    client: TestClient, secret: str
) -> None:
    """A host name with a zero-width space is saved (it looks like a name, and resolves
    as its IDNA form would) but the HTTP client refuses to encode it: each attempt is
    recorded as failed with that error, and the schedule runs out, instead of the lane
    ending unrecorded and the message waiting for ever."""
    webhook = subscribe(client, secret, "http://local\u200bhost:9/hook")
    post_events(client, secret, purchase("ana@example.com"))
    wait_until(lambda: first_status(client, secret, webhook["id"]) == "failed")
    [failed] = deliveries(client, secret, webhook["id"], "?status=failed")
    assert len(failed["attempts"]) == 5  # the test schedule's five attempts
    assert all("InvalidURL" in attempt["error"] for attempt in failed["attempts"])
