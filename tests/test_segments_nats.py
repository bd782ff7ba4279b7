"""Segments in NATS + PostgreSQL mode: the API node does not fold; an `eventfold worker`
folds from JetStream and runs the segments' backfill and timer."""

from __future__ import annotations

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
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def call(server: Served, method: str, path: str, body: Any = None) -> httpx2.Response:
    return httpx2.request(
        method,
        f"{server.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {server.secret}"},
        timeout=30,
    )


def test_segments_through_jetstream_and_a_worker(
    cluster: NatsCluster,  # noqa: F811
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = log_env(postgres_url, fold_in_server=False)
    with (
        served(tmp_path, env, ("--log", cluster.url)) as server,
        running_worker(cluster.url, env, tmp_path),
    ):
        assert post(server, [{"action": "purchase", "email": "ann@x.co"}] * 2) == 202
        wait_for(lambda: call(server, "GET", "/api/v0/profiles?email=ann@x.co").status_code == 200)
        vip = {"event": {"action": "purchase"}, "count": {"op": "gte", "value": 2}}
        created = call(
            server, "POST", "/api/v0/segments", {"key": "vip", "name": "V", "match": vip}
        )
        assert created.status_code == 201, created.text
        wait_for(lambda: call(server, "GET", "/api/v0/segments/vip").json()["status"] == "ready")
        assert post(server, [{"action": "purchase", "email": "bob@x.co"}] * 2) == 202

        def feed() -> list[str]:
            answer = call(server, "GET", "/api/v0/segments/vip/changes")
            assert answer.status_code == 200, answer.text
            return [change["change"] for change in answer.json()["changes"]]

        wait_for(lambda: feed() == ["entered", "entered"])
        erased = httpx2.delete(
            f"{server.url}/api/v0/profiles",
            params={"email": "bob@x.co"},
            headers={"Authorization": f"Bearer {server.secret}"},
            timeout=30,
        )
        assert erased.status_code == 202
        wait_for(lambda: feed() == ["entered", "entered", "exited"])
        members = call(server, "GET", "/api/v0/segments/vip/members").json()["members"]
        assert [m["emails"] for m in members] == [["ann@x.co"]]
