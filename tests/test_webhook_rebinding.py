"""Private targets are refused when connecting too, not only when the URL is saved: a
host name that resolved to a public address when saved and to 127.0.0.1 when connecting
(DNS rebinding) gets no request."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from eventfold.bootstrap import delivery_loop
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.services.webhook_sender import EndpointSender
from eventfold.services.webhooks import WebhookService
from eventfold.settings import Settings
from eventfold.storage.base import Storage
from eventfold.storage.sql_webhooks import record_segment_change
from tests.receivers import receiving
from tests.test_webhook_outbox import transaction


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        webhook_retry_seconds="0,0.1",
        webhook_timeout_seconds=1.0,
        webhook_lease_seconds=3.0,
    )


def test_the_sender_refuses_a_private_address_at_connection_time() -> None:
    async def send(url: str) -> tuple[int | None, str | None]:
        sender = EndpointSender(allow_private=False, concurrency=1, timeout_seconds=2)
        try:
            result = await sender.send(url, "msg_x", b"{}", ["whsec_" + "A" * 44])
        finally:
            await sender.close()
        return result.status_code, result.error

    with receiving() as receiver:
        status, error = asyncio.run(send(receiver.url.replace("127.0.0.1", "localhost")))
        assert status is None
        assert error is not None
        assert error.startswith("refused: localhost resolves to")
        assert receiver.requests == []


def test_a_name_that_turns_private_after_it_was_saved_gets_no_request(
    settings: Settings, storage: Storage
) -> None:
    secret = storage.create_key("acme", now_ms())[1]
    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    # When the URL is saved, its name resolves to a public address...
    public_then = WebhookService(
        storage, allow_private=False, resolve=lambda host, port: ["93.184.215.14"]
    )
    with receiving() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")  # ...and to 127.0.0.1 now
        body = json.dumps({"url": url, "types": ["segment.entered"]}).encode()
        webhook = public_then.create(principal, body)
        with transaction(settings.database_url) as connection:
            record_segment_change(
                connection, principal.account_id, 1, "vip", "segment.entered", 1, now_ms()
            )
        loop = delivery_loop(settings, storage)
        loop.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                [delivery] = storage.list_deliveries(webhook.id, None, None, 10)
                if delivery.state == "failed":
                    break
                time.sleep(0.05)
        finally:
            loop.stop()
        assert receiver.requests == []
    assert delivery.state == "failed"
    assert [a.status_code for a in delivery.attempts] == [None, None]
    assert all(
        "refused: localhost resolves to 127.0.0.1" in (a.error or "") for a in delivery.attempts
    )
