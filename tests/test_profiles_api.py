"""Profiles: the fold, identity merge, read-back and erasure, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.clock import now_ms
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events, seed_batch, wait_for_fold


def profile(client: TestClient, secret: str, **person: str) -> Any:
    response = client.get("/api/v0/profiles", params=person, headers=auth(secret))
    assert response.status_code == 200, response.text
    return response.json()


def test_seed_batch_is_folded_into_two_profiles(client: TestClient, secret: str) -> None:
    post_events(client, secret, *seed_batch()["events"])
    wait_for_fold(client)
    georgi = profile(client, secret, email="Georgi@Releva.ai")
    assert georgi["emails"] == ["georgi@releva.ai"]
    assert georgi["eventCount"] == 1
    assert georgi["locale"] == "bg"
    assert georgi["actions"]["search"]["count"] == 1
    assert georgi["products"] == {"search": ["123", "456", "789"]}
    assert {"key": "agent", "values": ["manual"]} in georgi["custom"]["string"]
    phone = profile(client, secret, phoneNumber="+359 123")
    assert phone["phoneNumbers"] == ["+359123"]
    assert phone["id"] != georgi["id"]


def test_older_event_does_not_overwrite_newer_custom_value_or_locale(
    client: TestClient, secret: str
) -> None:
    def event(ts: str, color: str, locale: str) -> dict[str, Any]:
        return {
            "action": "view",
            "email": "a@b.co",
            "timestamp": ts,
            "locale": locale,
            "custom": {"string": [{"key": "color", "values": [color]}]},
        }

    post_events(client, secret, event("2024-05-02T10:00:00Z", "red", "bg"))
    post_events(client, secret, event("2024-05-01T10:00:00Z", "blue", "en"))
    wait_for_fold(client)
    kept = profile(client, secret, email="a@b.co")
    assert kept["custom"]["string"] == [{"key": "color", "values": ["red"]}]
    assert kept["locale"] == "bg"
    assert kept["firstSeen"] == "2024-05-01T10:00:00.000Z"
    assert kept["lastSeen"] == "2024-05-02T10:00:00.000Z"
    assert kept["actions"]["view"] == {
        "count": 2,
        "firstAt": "2024-05-01T10:00:00.000Z",
        "lastAt": "2024-05-02T10:00:00.000Z",
    }


def test_linking_event_merges_email_and_phone_profiles_with_summed_counts(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, *[{"action": "view", "email": "a@b.co", "tags": ["x"]}] * 2)
    post_events(client, secret, *[{"action": "buy", "phoneNumber": "+359888"}] * 3)
    wait_for_fold(client)
    by_email = profile(client, secret, email="a@b.co")
    by_phone = profile(client, secret, phoneNumber="+359888")
    assert by_email["id"] != by_phone["id"]

    post_events(
        client,
        secret,
        {
            "action": "login",
            "email": "a@b.co",
            "phoneNumber": "+359888",
            "profileId": "shop-42",
            "tags": ["y"],
        },
    )
    post_events(client, secret, {"action": "buy", "profileId": "shop-42", "email": "a@b.co"})
    wait_for_fold(client)
    merged = profile(client, secret, profileId="shop-42")
    assert merged == profile(client, secret, email="a@b.co")
    assert merged == profile(client, secret, phoneNumber="+359888")
    assert merged["id"] == min(by_email["id"], by_phone["id"], key=lambda i: int(i[5:]))
    assert merged["eventCount"] == 7
    assert merged["actions"]["buy"]["count"] == 4
    assert merged["emails"] == ["a@b.co"]
    assert merged["phoneNumbers"] == ["+359888"]
    assert merged["tags"] == ["x", "y"]
    listed = client.get("/api/v0/events", params={"phoneNumber": "+359888"}, headers=auth(secret))
    assert len(listed.json()["events"]) == 7
    assert {e["foldedIntoProfile"] for e in listed.json()["events"]} == {merged["id"]}


def test_erasure_removes_profile_identifiers_and_events(client: TestClient, secret: str) -> None:
    post_events(
        client,
        secret,
        {"action": "view", "email": "gone@b.co", "phoneNumber": "+35911"},
        {"action": "view", "email": "kept@b.co"},
    )
    wait_for_fold(client)
    response = client.delete(
        "/api/v0/profiles", params={"phoneNumber": "+35911"}, headers=auth(secret)
    )
    assert response.status_code == 202
    assert response.json() == {}
    for person in ({"email": "gone@b.co"}, {"phoneNumber": "+35911"}):
        assert (
            client.get("/api/v0/profiles", params=person, headers=auth(secret)).status_code == 404
        )
    events = client.get("/api/v0/events", headers=auth(secret)).json()["events"]
    assert [e["email"] for e in events] == ["kept@b.co"]

    post_events(client, secret, {"action": "back", "email": "gone@b.co"})
    wait_for_fold(client)
    reborn = profile(client, secret, email="gone@b.co")
    assert reborn["eventCount"] == 1
    assert reborn["phoneNumbers"] == []


def test_erasing_an_unknown_person_is_202(client: TestClient, secret: str) -> None:
    response = client.delete(
        "/api/v0/profiles", params={"email": "nobody@b.co"}, headers=auth(secret)
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"email": "a@b.co", "phoneNumber": "+35988"},
        {"email": "not-an-email"},
        {"phoneNumber": "12"},
        {"profileId": ""},
    ],
)
def test_profile_requests_must_name_exactly_one_valid_identifier(
    client: TestClient, secret: str, params: dict[str, str]
) -> None:
    for method in ("GET", "DELETE"):
        response = client.request(method, "/api/v0/profiles", params=params, headers=auth(secret))
        assert response.status_code == 400
        assert response.json()["message"]


def test_another_accounts_person_is_never_visible(
    client: TestClient, secret: str, storage: Storage
) -> None:
    other = storage.create_key("other-shop", now_ms())[1]
    post_events(client, secret, {"action": "view", "email": "same@b.co"})
    post_events(
        client,
        other,
        *[{"action": "buy", "email": "same@b.co"}] * 2,
        {"action": "buy", "email": "only-other@b.co"},
    )
    wait_for_fold(client)
    assert profile(client, secret, email="same@b.co")["eventCount"] == 1
    assert profile(client, other, email="same@b.co")["eventCount"] == 2
    response = client.get(
        "/api/v0/profiles", params={"email": "only-other@b.co"}, headers=auth(secret)
    )
    assert response.status_code == 404
    mine = client.get("/api/v0/events", headers=auth(secret)).json()["events"]
    assert [e["action"] for e in mine] == ["view"]
    client.delete("/api/v0/profiles", params={"email": "same@b.co"}, headers=auth(secret))
    assert profile(client, other, email="same@b.co")["eventCount"] == 2


def test_healthz_reports_the_fold_lag(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert set(body["lag"]) == {"events", "seconds", "quarantined"}
    assert body["fold"]["running"] is True
    assert body["fold"]["lastError"] is None


def test_a_profile_is_read_by_eventfolds_own_id_and_a_merged_id_names_the_survivor(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, {"action": "view", "email": "m@b.co"})
    post_events(client, secret, {"action": "view", "phoneNumber": "+359777"})
    wait_for_fold(client)
    by_email = profile(client, secret, email="m@b.co")
    by_phone = profile(client, secret, phoneNumber="+359777")
    response = client.get(f"/api/v0/profiles/{by_email['id']}", headers=auth(secret))
    assert response.status_code == 200
    assert response.json() == by_email
    # An event links the two people: the younger profile is merged into the older.
    post_events(client, secret, {"action": "link", "email": "m@b.co", "phoneNumber": "+359777"})
    wait_for_fold(client)
    survivor, merged = sorted([by_email["id"], by_phone["id"]], key=lambda i: int(i[5:]))
    response = client.get(f"/api/v0/profiles/{merged}", headers=auth(secret))
    assert response.status_code == 404
    assert response.json()["mergedInto"] == survivor
    assert survivor in response.json()["message"]
    found = client.get(f"/api/v0/profiles/{survivor}", headers=auth(secret)).json()
    assert found["eventCount"] == 3
    for bad, status in (("prof_999999", 404), ("42", 400), ("prof_x", 400)):
        response = client.get(f"/api/v0/profiles/{bad}", headers=auth(secret))
        assert response.status_code == status, bad
        assert response.json()["message"]


def test_profile_ids_are_scoped_to_the_keys_account(
    client: TestClient, storage: Storage, secret: str
) -> None:
    post_events(client, secret, {"action": "view", "email": "own@b.co"})
    wait_for_fold(client)
    own = profile(client, secret, email="own@b.co")["id"]
    other = storage.create_key("other", now_ms())[1]
    response = client.get(f"/api/v0/profiles/{own}", headers=auth(other))
    assert response.status_code == 404
