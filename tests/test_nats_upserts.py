"""Profile upserts through the JetStream log: an API node publishes them, a worker folds
them in the stream's order with the events, and erasure reaches those still in the
stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.nats_cluster import NatsCluster

from tests.servers import Served, served
from tests.test_nats_log import (  # noqa: F401 (fixtures)
    cluster,
    log_env,
    post,
    postgres_url,
    profile,
    running_worker,
    stored_emails,
    wait_for,
)

pytestmark = pytest.mark.slow


def upsert(server: Served, profiles: Sequence[Mapping[str, object]]) -> int:
    answer = httpx2.post(
        f"{server.url}/api/v0/profiles",
        json={"profiles": profiles},
        headers={"Authorization": f"Bearer {server.secret}"},
        timeout=30,
    )
    return answer.status_code


def custom_strings(found: Any) -> dict[str, list[str]]:
    return {field["key"]: field["values"] for field in found["custom"]["string"]}


def test_upserts_go_through_jetstream_and_a_worker_into_profiles(
    cluster: NatsCluster,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    tier = {"string": [{"key": "tier", "values": ["gold"]}]}
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        event = {"action": "view", "email": "ann@x.co", "tags": ["vip"]}
        assert post(server, [{**event, "timestamp": "2024-05-02T10:00:00Z"}]) == 202
        later = {"email": "ann@x.co", "timestamp": "2024-05-03T10:00:00Z"}
        assert upsert(server, [{**later, "custom": tier, "removeTags": ["vip"]}]) == 202
        assert upsert(server, [{"profileId": "shop-9", "addTags": ["new"]}]) == 202
        with running_worker(cluster.url, env, tmp_path):
            wait_for(lambda: (profile(server, "ann@x.co") or {}).get("tags") == [])
            shop = httpx2.get(
                f"{server.url}/api/v0/profiles",
                params={"profileId": "shop-9"},
                headers={"Authorization": f"Bearer {server.secret}"},
            )
        ann = profile(server, "ann@x.co")
        assert ann is not None
        assert custom_strings(ann) == {"tier": ["gold"]}
        assert ann["eventCount"] == 1
        assert shop.status_code == 200, shop.text
        assert (shop.json()["tags"], shop.json()["eventCount"]) == (["new"], 0)
    assert stored_emails(postgres_url) == {"ann@x.co": 1}  # an upsert leaves no event row


def test_erasure_reaches_upserts_still_in_the_stream(
    cluster: NatsCluster,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    with served(tmp_path, env, ("--log", cluster.url)) as server:
        gone = {"email": "gone@x.co", "phoneNumber": "+35988000111", "addTags": ["secret"]}
        assert upsert(server, [gone]) == 202
        assert upsert(server, [{"phoneNumber": "+35988000111", "addTags": ["also"]}]) == 202
        assert post(server, [{"action": "view", "email": "kept@x.co"}]) == 202
        erased = httpx2.delete(
            f"{server.url}/api/v0/profiles",
            params={"email": "gone@x.co"},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert erased.status_code == 202, erased.text
        # Accepted after the erasure: a new profile, with this upsert's tag only.
        assert upsert(server, [{"email": "gone@x.co", "addTags": ["back"]}]) == 202
        with running_worker(cluster.url, env, tmp_path):
            wait_for(lambda: profile(server, "kept@x.co") is not None)
            wait_for(lambda: profile(server, "gone@x.co") is not None)
        back = profile(server, "gone@x.co")
        assert back is not None
        assert (back["tags"], back["phoneNumbers"]) == (["back"], [])
        found = httpx2.get(
            f"{server.url}/api/v0/profiles",
            params={"phoneNumber": "+35988000111"},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert found.status_code == 404
