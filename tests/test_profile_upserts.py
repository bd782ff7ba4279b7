"""``POST /api/v0/profiles``: profile upserts go through the log and the fold like events
(same order, last writer wins), are no events, and segments and webhooks see them; on
both backends (tests/test_nats_upserts.py: through JetStream)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.settings import Settings
from tests.conftest import auth, post_events, wait_for_fold
from tests.test_webhook_delivery import deliveries, subscribe, wait_until


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,
        deliver_in_server=False,  # messages stay listed as pending, none is attempted
    )


def upsert(
    client: TestClient, secret: str, *profiles: dict[str, Any], key: str | None = None
) -> Any:
    """Posts the upserts and waits until they are folded; returns the answer."""
    headers = auth(secret) | ({"Idempotency-Key": key} if key else {})
    response = client.post("/api/v0/profiles", json={"profiles": list(profiles)}, headers=headers)
    if response.status_code == 202:
        wait_for_fold(client)
    return response


def profile(client: TestClient, secret: str, **person: str) -> Any:
    response = client.get("/api/v0/profiles", params=person, headers=auth(secret))
    assert response.status_code == 200, response.text
    return response.json()


def strings(found: Any) -> dict[str, list[str]]:
    return {field["key"]: field["values"] for field in found["custom"]["string"]}


def test_an_upsert_makes_a_profile_with_no_event(client: TestClient, secret: str) -> None:
    answer = upsert(
        client,
        secret,
        {
            "email": " Ann@Example.com",
            "custom": {
                "string": [{"key": "tier", "values": ["gold"]}],
                "numeric": [{"key": "ltv", "values": [120.5]}],
                "date": [{"key": "birthday", "values": ["1990-05-01T00:00:00+02:00"]}],
            },
            "addTags": ["vip", "newsletter"],
        },
    )
    assert (answer.status_code, answer.json()) == (202, {})
    ann = profile(client, secret, email="ann@example.com")
    assert ann["emails"] == ["ann@example.com"]
    assert strings(ann) == {"tier": ["gold"]}
    assert ann["custom"]["numeric"] == [{"key": "ltv", "values": [120.5]}]
    assert ann["custom"]["date"] == [{"key": "birthday", "values": ["1990-04-30T22:00:00Z"]}]
    assert ann["tags"] == ["newsletter", "vip"]
    assert (ann["eventCount"], ann["actions"], ann["firstSeen"], ann["lastSeen"]) == (
        0,
        {},
        None,
        None,
    )
    assert client.get("/api/v0/events", headers=auth(secret)).json()["events"] == []
    by_shop_id = upsert(client, secret, {"profileId": "shop-7", "addTags": ["x"]})
    assert by_shop_id.status_code == 202
    assert profile(client, secret, profileId="shop-7")["tags"] == ["x"]


def test_the_latest_writer_wins_by_timestamp_whatever_the_order_received(
    client: TestClient, secret: str
) -> None:
    post_events(
        client,
        secret,
        {
            "action": "view",
            "email": "a@b.co",
            "timestamp": "2024-05-02T10:00:00Z",
            "tags": ["vip"],
            "custom": {"string": [{"key": "color", "values": ["red"]}]},
        },
    )
    older = {
        "email": "a@b.co",
        "timestamp": "2024-05-01T10:00:00Z",
        "custom": {"string": [{"key": "color", "values": ["blue"]}]},
        "removeTags": ["vip"],
    }
    assert upsert(client, secret, older).status_code == 202
    kept = profile(client, secret, email="a@b.co")
    assert (strings(kept), kept["tags"]) == ({"color": ["red"]}, ["vip"])
    newer = {**older, "timestamp": "2024-05-03T10:00:00Z", "addTags": ["gold"]}
    assert upsert(client, secret, newer).status_code == 202
    changed = profile(client, secret, email="a@b.co")
    assert (strings(changed), changed["tags"]) == ({"color": ["blue"]}, ["gold"])
    # An event older than the removal does not bring the tag back; the upserts counted
    # as no events and moved no dates.
    post_events(
        client,
        secret,
        {"action": "view", "email": "a@b.co", "timestamp": "2024-05-02T12:00:00Z", "tags": ["vip"]},
    )
    last = profile(client, secret, email="a@b.co")
    assert last["tags"] == ["gold"]
    assert (last["eventCount"], last["actions"]["view"]["count"]) == (2, 2)
    assert last["lastSeen"] == "2024-05-02T12:00:00.000Z"


def test_a_tag_both_added_and_removed_in_one_upsert_is_removed(
    client: TestClient, secret: str
) -> None:
    both = {"email": "a@b.co", "addTags": ["vip", "new"], "removeTags": ["vip"]}
    assert upsert(client, secret, both).status_code == 202
    assert profile(client, secret, email="a@b.co")["tags"] == ["new"]


def test_one_bad_profile_stores_nothing_and_every_problem_has_its_path(
    client: TestClient, secret: str
) -> None:
    answer = upsert(
        client,
        secret,
        {"email": "good@example.com", "addTags": ["vip"]},
        {"custom": {"string": [{"key": "tier", "values": ["gold"]}]}},
        {"email": "not-an-email"},
        {"email": "x@y.co", "tags": ["vip"]},
        {"phoneNumber": "+359888123456", "addTags": [""]},
        {"email": "x@y.co", "timestamp": "2999-01-01T00:00:00Z"},
    )
    assert answer.status_code == 400, answer.text
    paths = [error["path"] for error in answer.json()["errors"]]
    assert paths == [
        "profiles[1]",
        "profiles[2].email",
        "profiles[3].tags",
        "profiles[4].addTags[0]",
        "profiles[5].timestamp",
    ]
    assert "nothing was stored" in answer.json()["message"]
    missing = client.get(
        "/api/v0/profiles", params={"email": "good@example.com"}, headers=auth(secret)
    )
    assert missing.status_code == 404
    for body in (b"[]", b'{"profiles": {}}', b"{"):
        refused = client.post("/api/v0/profiles", content=body, headers=auth(secret))
        assert refused.status_code == 400, refused.text
        assert "profiles" in refused.json()["message"]


def test_more_than_a_thousand_profiles_is_a_413(client: TestClient, secret: str) -> None:
    answer = upsert(client, secret, *[{"email": f"p{n}@x.co"} for n in range(1_001)])
    assert answer.status_code == 413, answer.text
    assert "at most 1000 profiles" in answer.json()["message"]
    assert (
        upsert(client, secret, *[{"email": f"p{n}@x.co"} for n in range(1_000)]).status_code == 202
    )


def test_a_repeated_idempotency_key_is_stored_once(client: TestClient, secret: str) -> None:
    vip = {"email": "a@b.co", "addTags": ["vip"]}  # no timestamp: the time received
    assert upsert(client, secret, vip, key="k-1").status_code == 202
    assert upsert(client, secret, {"email": "a@b.co", "removeTags": ["vip"]}).status_code == 202
    assert upsert(client, secret, vip, key="k-1").status_code == 202  # not stored again
    assert profile(client, secret, email="a@b.co")["tags"] == []
    conflict = upsert(client, secret, {"email": "a@b.co"}, key="k-1")
    assert conflict.status_code == 422, conflict.text


def test_identifiers_named_together_link_their_profiles(client: TestClient, secret: str) -> None:
    post_events(client, secret, {"action": "view", "email": "a@b.co"})
    post_events(client, secret, {"action": "buy", "phoneNumber": "+359888123456"})
    linking = {"email": "a@b.co", "phoneNumber": "+359 888 123 456", "addTags": ["linked"]}
    assert upsert(client, secret, linking).status_code == 202
    merged = profile(client, secret, phoneNumber="+359888123456")
    assert merged["emails"] == ["a@b.co"]
    assert (merged["eventCount"], merged["tags"]) == (2, ["linked"])


def test_erasure_removes_what_upserts_set(client: TestClient, secret: str) -> None:
    upsert(client, secret, {"email": "a@b.co", "profileId": "s-1", "addTags": ["vip"]})
    erased = client.delete("/api/v0/profiles", params={"profileId": "s-1"}, headers=auth(secret))
    assert erased.status_code == 202
    gone = client.get("/api/v0/profiles", params={"email": "a@b.co"}, headers=auth(secret))
    assert gone.status_code == 404
    upsert(client, secret, {"email": "a@b.co"})
    assert profile(client, secret, email="a@b.co")["tags"] == []


def define_segment(client: TestClient, secret: str, key: str, match: dict[str, Any]) -> None:
    body = {"key": key, "name": key, "match": match}
    response = client.post("/api/v0/segments", json=body, headers=auth(secret))
    assert response.status_code == 201, response.text
    wait_until(
        lambda: (
            client.get(f"/api/v0/segments/{key}", headers=auth(secret)).json()["status"] == "ready"
        )
    )


def changes(client: TestClient, secret: str, key: str) -> list[tuple[str, str]]:
    answer = client.get(f"/api/v0/segments/{key}/changes", headers=auth(secret))
    assert answer.status_code == 200, answer.text
    return [(change["profile"], change["change"]) for change in answer.json()["changes"]]


def test_segments_see_upserted_fields_and_only_segment_webhooks_fire(
    client: TestClient, secret: str
) -> None:
    webhook = subscribe(
        client, secret, "http://127.0.0.1:9/hooks", types=["event.matched", "segment.entered"]
    )
    # A person with events already has stored leaf states and memberships; an upsert
    # changes only profile fields, and the segments must still see them.
    post_events(client, secret, {"action": "view", "email": "a@b.co"})
    define_segment(
        client, secret, "gold", {"profile": "custom.string.tier", "op": "eq", "value": "gold"}
    )
    define_segment(client, secret, "vip", {"profile": "tags", "op": "contains", "value": "vip"})
    ann = profile(client, secret, email="a@b.co")["id"]
    upsert(
        client,
        secret,
        {"email": "a@b.co", "custom": {"string": [{"key": "tier", "values": ["gold"]}]}},
        {"email": "new@b.co", "addTags": ["vip"]},
    )
    new = profile(client, secret, email="new@b.co")["id"]
    assert changes(client, secret, "gold") == [(ann, "entered")]
    assert changes(client, secret, "vip") == [(new, "entered")]
    upsert(client, secret, {"email": "new@b.co", "removeTags": ["vip"]})
    assert changes(client, secret, "vip") == [(new, "entered"), (new, "exited")]
    assert profile(client, secret, email="new@b.co")["segments"] == []
    # The event matched; the upserts did not (they are no events): only their segments.
    types = sorted(delivery["type"] for delivery in deliveries(client, secret, webhook["id"]))
    assert types == ["event.matched", "segment.entered", "segment.entered"]
