"""The outbox: messages are written in the transaction of the change that caused them
(segment changes through ``record_segment_change``, events by the fold), erased with
their person, and attempted by one delivery process at a time however many run."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from eventfold.bootstrap import delivery_loop
from eventfold.clock import now_ms
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_webhooks import record_segment_change
from tests.conftest import auth, post_events, wait_for_fold
from tests.receivers import Answer, receiving
from tests.test_webhook_delivery import deliveries, subscribe, wait_until


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,
        webhook_retry_seconds="0,0.2,0.2",
        webhook_timeout_seconds=1.0,
        webhook_lease_seconds=3.0,
    )


@contextmanager
def transaction(database_url: str) -> Iterator[SqlConnection]:
    """A connection of its own in an open transaction: committed at the end of the block,
    rolled back when it raises."""
    if database_url.startswith("sqlite"):
        connection: Any = sqlite3.connect(
            database_url.removeprefix("sqlite:///"), isolation_level=None
        )
        connection.execute("BEGIN IMMEDIATE")
        wrapped: SqlConnection = connection
    else:
        import psycopg

        from eventfold.storage.postgres import QmarkConnection

        connection = psycopg.connect(database_url, autocommit=True)
        connection.execute("BEGIN")
        wrapped = QmarkConnection(connection)
    try:
        yield wrapped
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    else:
        connection.execute("COMMIT")
    finally:
        connection.close()


def record_then_fail(database_url: str, account_id: int, profile_id: int) -> None:
    with transaction(database_url) as connection:
        record_segment_change(
            connection, account_id, profile_id, "vip", "segment.entered", 1, now_ms()
        )
        raise RuntimeError("the segment fold failed: nothing it wrote may be sent")


def profile_number(client: TestClient, secret: str, email: str) -> int:
    profile = client.get(f"/api/v0/profiles?email={email}", headers=auth(secret)).json()
    return int(profile["id"].removeprefix("prof_"))


def test_a_segment_change_is_queued_in_the_callers_transaction_and_delivered(
    client: TestClient, secret: str, account_id: int, database_url: str
) -> None:
    with receiving() as receiver:
        webhook = subscribe(
            client,
            secret,
            receiver.url,
            types=["segment.entered", "segment.exited"],
            segments=["vip"],
        )
        subscribe(client, secret, receiver.url + "/events-only")  # event.matched only
        post_events(client, secret, {"action": "login", "email": "ana@example.com"})
        wait_for_fold(client)
        receiver.wait_for(1)  # the event.matched message of the second endpoint
        profile_id = profile_number(client, secret, "ana@example.com")
        with pytest.raises(RuntimeError, match="segment fold failed"):
            record_then_fail(database_url, account_id, profile_id)
        with transaction(database_url) as connection:
            assert (
                record_segment_change(
                    connection, account_id, profile_id, "other", "segment.entered", 1, now_ms()
                )
                == 0
            )  # the endpoint asks for "vip" only
            queued = record_segment_change(
                connection, account_id, profile_id, "vip", "segment.entered", 1, now_ms()
            )
            assert queued == 1
        # Deliveries list newest first by creation time, messages of one millisecond by
        # id: the exit is made a millisecond later at least, so the order below is its.
        time.sleep(0.002)
        with transaction(database_url) as connection:
            record_segment_change(
                connection, account_id, profile_id, "vip", "segment.exited", 2, now_ms()
            )
        requests = receiver.wait_for(3)[1:]
    payloads = [Webhook(webhook["secret"]).verify(r.body, r.headers) for r in requests]
    assert [p["type"] for p in payloads] == ["segment.entered", "segment.exited"]
    assert [p["sequence"] for p in payloads] == [1, 2]
    assert {p["data"]["segment"] for p in payloads} == {"vip"}
    assert payloads[0]["data"]["profile"]["emails"] == ["ana@example.com"]
    listed = deliveries(client, secret, webhook["id"])
    assert [d["type"] for d in listed] == ["segment.exited", "segment.entered"]
    assert {d["webhookId"] for d in listed} == {r.headers["webhook-id"] for r in requests}


def test_recording_the_same_change_twice_queues_one_message(
    client: TestClient, secret: str, account_id: int, database_url: str
) -> None:
    webhook = subscribe(client, secret, "http://127.0.0.1:9/hook", types=["segment.entered"])
    post_events(client, secret, {"action": "login", "email": "ana@example.com"})
    wait_for_fold(client)
    profile_id = profile_number(client, secret, "ana@example.com")
    for _ in range(2):
        with transaction(database_url) as connection:
            record_segment_change(
                connection, account_id, profile_id, "vip", "segment.entered", 7, now_ms()
            )
    assert len(deliveries(client, secret, webhook["id"])) == 1


def test_erasing_a_person_deletes_their_messages(client: TestClient, secret: str) -> None:
    webhook = subscribe(client, secret, "http://127.0.0.1:9/nobody-listens")
    post_events(
        client,
        secret,
        {"action": "login", "email": "ana@example.com"},
        {"action": "login", "email": "bo@example.com"},
    )
    wait_for_fold(client)
    assert len(deliveries(client, secret, webhook["id"])) == 2
    erased = client.delete("/api/v0/profiles?email=ana@example.com", headers=auth(secret))
    assert erased.status_code == 202
    [left] = deliveries(client, secret, webhook["id"])
    bo = profile_number(client, secret, "bo@example.com")
    assert left["profileId"] == f"prof_{bo}"


def test_several_delivery_processes_attempt_each_message_once(
    client: TestClient, secret: str, settings: Settings
) -> None:
    # Slow answers keep messages in flight while the other loops look for work.
    with receiving(lambda index, request: Answer(200, delay_seconds=0.05)) as receiver:
        webhook = subscribe(client, secret, receiver.url)
        stores = [open_storage(settings) for _ in range(3)]
        loops = [delivery_loop(settings, store) for store in stores]
        for loop in loops:
            loop.start()
        try:
            post_events(
                client,
                secret,
                *[{"action": "login", "email": f"p{n}@example.com"} for n in range(60)],
            )
            requests = receiver.wait_for(60, timeout=30)
            wait_until(
                lambda: all(
                    d["status"] == "delivered"
                    for d in deliveries(client, secret, webhook["id"], "?limit=100")
                )
            )
            time.sleep(0.3)
        finally:
            for loop in loops:
                loop.stop()
            for store in stores:
                store.close()
    ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert len(ids) == len(set(ids)) == 60
    assert len(requests) == 60
    assert {json.loads(r.body)["sequence"] for r in requests} == {1}
