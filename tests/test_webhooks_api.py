"""The webhooks API: endpoints of the key's account, validation, secret rotation, the
refusal of private targets, and isolation between accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.domain.moments import to_epoch_ms
from eventfold.http.app import create_app
from eventfold.settings import Settings
from eventfold.storage.base import Storage
from tests.conftest import auth

PUBLIC_URL = "https://93.184.215.14/hooks/eventfold"  # an IP literal: no DNS needed


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Private targets refused, as in production; nothing is delivered by these tests.
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        deliver_in_server=False,
    )


def create(client: TestClient, secret: str, **fields: Any) -> dict[str, Any]:
    body = {"url": PUBLIC_URL, "types": ["event.matched"], **fields}
    response = client.post("/api/v0/webhooks", json=body, headers=auth(secret))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_created_webhook_shows_its_secret_once(client: TestClient, secret: str) -> None:
    created = create(client, secret, actions=["purchase"])
    assert created["id"].startswith("wh_")
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "enabled"
    assert created["actions"] == ["purchase"]
    assert created["segments"] is None
    assert created["createdAt"].endswith("Z")
    shown = client.get(f"/api/v0/webhooks/{created['id']}", headers=auth(secret)).json()
    assert "secret" not in shown
    assert {k: v for k, v in created.items() if k != "secret"} == shown
    listed = client.get("/api/v0/webhooks", headers=auth(secret)).json()
    assert listed == {"webhooks": [shown]}


def test_patch_changes_only_the_fields_given(client: TestClient, secret: str) -> None:
    created = create(client, secret, segments=["vip"], types=["segment.entered"])
    response = client.patch(
        f"/api/v0/webhooks/{created['id']}",
        json={"status": "disabled", "actions": ["search"], "segments": None},
        headers=auth(secret),
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["status"] == "disabled"
    assert changed["actions"] == ["search"]
    assert changed["segments"] is None
    assert changed["types"] == ["segment.entered"]
    assert changed["url"] == PUBLIC_URL


def test_delete_answers_204_and_the_webhook_is_gone(client: TestClient, secret: str) -> None:
    created = create(client, secret)
    path = f"/api/v0/webhooks/{created['id']}"
    assert client.delete(path, headers=auth(secret)).status_code == 204
    assert client.get(path, headers=auth(secret)).status_code == 404
    assert client.delete(path, headers=auth(secret)).status_code == 404


def test_rotating_keeps_the_old_secret_signing_for_24_hours(
    client: TestClient, secret: str
) -> None:
    created = create(client, secret)
    before = now_ms()
    response = client.post(f"/api/v0/webhooks/{created['id']}/secret", headers=auth(secret))
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    expires = to_epoch_ms(datetime.fromisoformat(rotated["previousSecretExpiresAt"]))
    assert before + 24 * 3600_000 - 5_000 <= expires <= now_ms() + 24 * 3600_000


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"types": ["event.matched"]}, "url"),
        ({"url": PUBLIC_URL, "types": ["event.bought"]}, "types"),
        ({"url": PUBLIC_URL, "types": []}, "types"),
        ({"url": "ftp://example.com/x", "types": ["event.matched"]}, "url"),
        ({"url": "https://", "types": ["event.matched"]}, "url"),
        ({"url": "https://[::1", "types": ["event.matched"]}, "url"),
        ({"url": "https://[example]/x", "types": ["event.matched"]}, "url"),
        ({"url": "https://example.com/a b", "types": ["event.matched"]}, "url"),
        ({"url": " https://example.com/", "types": ["event.matched"]}, "url"),
        ({"url": PUBLIC_URL, "types": ["event.matched"], "actions": [""]}, "actions"),
        ({"url": PUBLIC_URL, "types": ["event.matched"], "colour": "red"}, "colour"),
        ({"url": 12, "types": ["event.matched"]}, "url"),
    ],
)
def test_bad_fields_are_named_in_a_400(
    client: TestClient, secret: str, body: dict[str, Any], path: str
) -> None:
    response = client.post("/api/v0/webhooks", json=body, headers=auth(secret))
    assert response.status_code == 400, response.text
    answer = response.json()
    assert path in answer["message"]
    assert answer["errors"][0]["path"] == path


def test_patch_with_a_bad_status_is_a_400(client: TestClient, secret: str) -> None:
    created = create(client, secret)
    response = client.patch(
        f"/api/v0/webhooks/{created['id']}", json={"status": "paused"}, headers=auth(secret)
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"path": "status", "message": "'paused' is not 'enabled' or 'disabled'"}
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_targets_are_refused(client: TestClient, secret: str, url: str) -> None:
    response = client.post(
        "/api/v0/webhooks", json={"url": url, "types": ["event.matched"]}, headers=auth(secret)
    )
    assert response.status_code == 400, response.text
    assert "EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE" in response.json()["message"]
    created = create(client, secret)
    response = client.patch(
        f"/api/v0/webhooks/{created['id']}", json={"url": url}, headers=auth(secret)
    )
    assert response.status_code == 400


def test_private_targets_are_allowed_when_the_server_allows_them(
    settings: Settings, storage: Storage, secret: str
) -> None:
    services = build_services(settings.replace(webhooks_allow_private=True), storage)
    with TestClient(create_app(services)) as client:
        created = create(client, secret, url="http://127.0.0.1:9/hook")
    assert created["url"] == "http://127.0.0.1:9/hook"


@pytest.fixture
def other_secret(storage: Storage) -> str:
    return storage.create_key("globex", now_ms())[1]


def test_every_route_is_scoped_to_the_keys_account(
    client: TestClient, secret: str, other_secret: str
) -> None:
    mine = create(client, secret)
    theirs = create(client, other_secret)
    base = f"/api/v0/webhooks/{mine['id']}"
    since = {"since": "2020-01-01T00:00:00Z"}
    attempts = [
        client.get(base, headers=auth(other_secret)),
        client.patch(base, json={"status": "disabled"}, headers=auth(other_secret)),
        client.post(f"{base}/secret", headers=auth(other_secret)),
        client.get(f"{base}/deliveries", headers=auth(other_secret)),
        client.post(f"{base}/replay", json=since, headers=auth(other_secret)),
        client.delete(base, headers=auth(other_secret)),
    ]
    assert [response.status_code for response in attempts] == [404] * len(attempts)
    assert all("no webhook" in response.json()["message"] for response in attempts)
    listed = client.get("/api/v0/webhooks", headers=auth(other_secret)).json()["webhooks"]
    assert [webhook["id"] for webhook in listed] == [theirs["id"]]
    unchanged = client.get(base, headers=auth(secret)).json()
    assert unchanged["status"] == "enabled"
    assert client.post(f"{base}/replay", json=since, headers=auth(secret)).status_code == 202


def test_routes_need_a_key(client: TestClient) -> None:
    assert client.get("/api/v0/webhooks").status_code == 401
    assert client.post("/api/v0/webhooks", json={}).status_code == 401


def test_deliveries_listing_checks_its_query(client: TestClient, secret: str) -> None:
    created = create(client, secret)
    base = f"/api/v0/webhooks/{created['id']}/deliveries"
    assert client.get(base, headers=auth(secret)).json() == {"deliveries": [], "nextCursor": None}
    assert client.get(f"{base}?status=lost", headers=auth(secret)).status_code == 400
    assert client.get(f"{base}?cursor=nonsense", headers=auth(secret)).status_code == 400
    assert client.get(f"{base}?limit=0", headers=auth(secret)).status_code == 400


def test_replay_needs_an_iso_date(client: TestClient, secret: str) -> None:
    created = create(client, secret)
    response = client.post(
        f"/api/v0/webhooks/{created['id']}/replay",
        json={"since": "yesterday"},
        headers=auth(secret),
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "since"
