"""Webhooks with a NATS JetStream log: the worker folds batches from the stream and writes
the messages in that transaction; the server delivers them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from bench.nats_cluster import NatsCluster
from standardwebhooks.webhooks import Webhook

from tests.receivers import receiving
from tests.servers import served
from tests.test_nats_log import (  # noqa: F401 (fixtures)
    cluster,
    log_env,
    post,
    postgres_url,
    running_worker,
)

pytestmark = pytest.mark.slow


def test_events_folded_from_the_stream_are_delivered(
    cluster: NatsCluster,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = {
        **log_env(postgres_url, fold_in_server=False),
        "EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE": "true",
    }
    with (
        receiving() as receiver,
        served(tmp_path, env, ("--log", cluster.url)) as server,
        running_worker(cluster.url, env, tmp_path),
    ):
        created = httpx2.post(
            f"{server.url}/api/v0/webhooks",
            json={"url": receiver.url, "types": ["event.matched"]},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert created.status_code == 201, created.text
        events = [{"action": "view", "email": f"n{n}@example.com"} for n in range(5)]
        assert post(server, events) == 202
        requests = receiver.wait_for(5, timeout=60)
    secret = created.json()["secret"]
    payloads = [Webhook(secret).verify(r.body, r.headers) for r in requests]
    emails = sorted(p["data"]["event"]["email"] for p in payloads)
    assert emails == [f"n{n}@example.com" for n in range(5)]
    assert len({r.headers["webhook-id"] for r in requests}) == 5
    assert json.loads(requests[0].body)["type"] == "event.matched"
