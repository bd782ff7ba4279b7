"""GET /api/v0/profiles/export: every profile of the key's account as NDJSON, on SQLite
and PostgreSQL, across pages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import Services
from eventfold.clock import now_ms
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events, wait_for_fold
from tests.test_segments_api import VIP, create, wait_until_ready


def export(client: TestClient, secret: str, **params: str) -> list[Any]:
    response = client.get("/api/v0/profiles/export", params=params, headers=auth(secret))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text == "" or response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def one(client: TestClient, secret: str, profile_id: str) -> Any:
    response = client.get(f"/api/v0/profiles/{profile_id}", headers=auth(secret))
    assert response.status_code == 200, response.text
    return response.json()


def test_the_export_is_every_profile_as_the_api_shows_it_across_pages(
    client: TestClient,
    secret: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services.profile_export, "page_size", 2)  # 7 people: 4 pages
    create(client, secret, "vip", VIP)
    people = [f"p{n}@b.co" for n in range(7)]
    post_events(client, secret, *({"action": "view", "email": email} for email in people))
    post_events(client, secret, *[{"action": "purchase", "email": "p3@b.co"}] * 2)
    wait_for_fold(client)
    wait_until_ready(client, secret, "vip")
    exported = export(client, secret)
    assert sorted(profile["emails"][0] for profile in exported) == people
    ids = [int(profile["id"].removeprefix("prof_")) for profile in exported]
    assert ids == sorted(ids)
    assert exported == [one(client, secret, profile["id"]) for profile in exported]
    vip = [profile["emails"] for profile in exported if profile["segments"] == ["vip"]]
    assert vip == [["p3@b.co"]]


def test_since_keeps_the_profiles_seen_at_or_after_it(client: TestClient, secret: str) -> None:
    post_events(
        client,
        secret,
        {"action": "view", "email": "old@b.co", "timestamp": "2024-01-01T00:00:00Z"},
        {"action": "view", "email": "edge@b.co", "timestamp": "2024-06-01T00:00:00Z"},
        {"action": "view", "email": "new@b.co", "timestamp": "2024-09-01T00:00:00Z"},
    )
    wait_for_fold(client)
    recent = export(client, secret, since="2024-06-01T00:00:00Z")
    assert sorted(profile["emails"][0] for profile in recent) == ["edge@b.co", "new@b.co"]
    assert export(client, secret, since="2030-01-01T00:00:00Z") == []
    assert len(export(client, secret)) == 3


def test_the_export_holds_only_the_keys_account(
    client: TestClient, secret: str, storage: Storage
) -> None:
    other = storage.create_key("other-shop", now_ms())[1]
    post_events(client, secret, {"action": "view", "email": "mine@b.co"})
    post_events(client, other, {"action": "view", "email": "theirs@b.co"})
    wait_for_fold(client)
    assert [profile["emails"] for profile in export(client, secret)] == [["mine@b.co"]]
    assert [profile["emails"] for profile in export(client, other)] == [["theirs@b.co"]]
    fresh = storage.create_key("empty-shop", now_ms())[1]
    assert export(client, fresh) == []


def test_a_bad_since_is_400_and_no_key_is_401(client: TestClient, secret: str) -> None:
    response = client.get(
        "/api/v0/profiles/export", params={"since": "yesterday"}, headers=auth(secret)
    )
    assert response.status_code == 400
    assert "since" in response.json()["message"]
    assert client.get("/api/v0/profiles/export").status_code == 401
