"""Metrics, request ids, structured logs and readiness."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.http.app import create_app
from eventfold.settings import Settings
from eventfold.storage import open_storage
from tests.conftest import auth, post_events, seed_batch
from tests.servers import served


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}(\{{{re.escape(selector)}\}})? (\S+)$"
        if labels
        else rf"^{re.escape(name)} (\S+)$"
    )
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.groups()[-1])
    return 0.0


def test_metrics_count_requests_events_rejections_and_commits(
    client: TestClient, secret: str
) -> None:
    before = client.get("/metrics").text
    post_events(client, secret, *seed_batch()["events"])
    client.post("/api/v0/events", content=b"{", headers=auth(secret))
    client.post("/api/v0/events", content=b"{}", headers=auth("efsk_wrong"))
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def grew(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert grew("eventfold_events_accepted_total", account="acme") == 2
    assert grew("eventfold_batches_rejected_total", reason="invalid_request") == 1
    assert grew("eventfold_batches_rejected_total", reason="unauthorized") == 1
    assert (
        grew("eventfold_http_requests_total", method="POST", route="/api/v0/events", status="202")
        == 1
    )
    assert (
        grew("eventfold_http_requests_total", method="POST", route="/api/v0/events", status="400")
        == 1
    )
    assert grew("eventfold_batch_size_events_count") == 1
    assert grew("eventfold_group_commit_jobs_count") >= 1
    assert "eventfold_fold_lag_events" in text
    assert "eventfold_http_request_duration_seconds_bucket" in text


def test_request_id_is_taken_from_the_client_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)


@pytest.fixture
def lagging(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = Settings(
        fold_process=False,
        database_url=f"sqlite:///{tmp_path / 'l.db'}",
        fold_in_server=False,
        ready_max_lag_seconds=0.2,
        fold_lag_cache_seconds=0.001,
    )
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    with TestClient(create_app(build_services(settings, storage))) as client:
        yield client, secret
    storage.close()


def test_readyz_is_503_while_the_fold_is_behind_its_bound(
    lagging: tuple[TestClient, str],
) -> None:
    client, secret = lagging
    assert client.get("/readyz").json()["status"] == "ready"
    post_events(client, secret, {"action": "a", "email": "a@b.co"})
    time.sleep(0.3)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert "behind" in response.json()["message"]
    assert client.get("/healthz").status_code == 200  # alive all the same


@pytest.mark.slow
def test_json_log_lines_and_metrics_across_two_worker_processes(tmp_path: Path) -> None:
    with served(tmp_path, args=("--workers", "2")) as server:
        body = json.dumps({"events": [{"action": "a", "email": "a@b.co"}] * 5})
        with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as http:
            for index in range(20):  # new connections spread over both processes
                response = http.post(
                    "/api/v0/events",
                    content=body,
                    headers={"X-Request-Id": f"r{index}", "Connection": "close"},
                )
                assert response.status_code == 202
            text = http.get("/metrics").text
        assert metric(text, "eventfold_events_accepted_total", account="default") == 100
        time.sleep(0.3)
    lines = [json.loads(line) for line in server.output if line.startswith("{")]
    requests = [
        line
        for line in lines
        if line.get("message") == "request" and line["path"] == "/api/v0/events"
    ]
    assert {line["request_id"] for line in requests} == {f"r{i}" for i in range(20)}
    first = requests[0]
    assert {"time", "level", "method", "status", "duration_ms", "account", "events"} <= set(first)
    assert first["account"] == "default"
    assert first["events"] == 5
    everything = "".join(server.output)
    assert server.secret not in everything
    assert '"action": "a"' not in everything  # no event bodies
