"""POST /api/v0/events through the real ASGI app onto a real SQLite file."""

from __future__ import annotations

import gzip
import json
from typing import Any

from starlette.testclient import TestClient

from eventfold.storage.base import Storage
from tests.conftest import auth, seed_batch, stored


def post(client: TestClient, secret: str, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/api/v0/events", content=content, headers={**auth(secret), **headers})


def test_seed_example_batch_is_accepted_with_202_and_empty_object(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    response = post(client, secret, seed_batch())
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"{}"
    events = stored(storage, account_id)
    assert [e["action"] for e in events] == ["search", "clicked"]
    assert events[0]["email"] == "georgi@releva.ai"
    assert events[1]["phoneNumber"] == "+359123"
    assert events[1]["products"][0]["custom"]["string"] == [{"key": "color", "values": ["black"]}]


def test_charset_parameter_in_content_type_is_accepted(client: TestClient, secret: str) -> None:
    response = post(
        client, secret, seed_batch(), **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 202


def test_identifiers_are_normalised_before_storing(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    event = {
        "action": "view",
        "email": "  Georgi@Releva.AI ",
        "phoneNumber": "+359 (88) 812-3456",
        "locale": "BG",
        "products": [{"id": 123}],
    }
    assert post(client, secret, {"events": [event]}).status_code == 202
    [kept] = stored(storage, account_id)
    assert kept["email"] == "georgi@releva.ai"
    assert kept["phoneNumber"] == "+359888123456"
    assert kept["locale"] == "bg"
    assert kept["products"] == [{"id": "123"}]


def test_missing_timestamp_means_time_of_receipt_and_zone_less_means_utc(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    events = [
        {"action": "a", "email": "a@b.co"},
        {"action": "b", "email": "a@b.co", "timestamp": "2019-06-19T23:45:56"},
        {"action": "c", "email": "a@b.co", "timestamp": "2019-06-19T23:45:56+02:00"},
    ]
    assert post(client, secret, {"events": events}).status_code == 202
    first, naive, zoned = stored(storage, account_id)
    assert first["timestamp"].startswith("20")
    assert first["timestamp"].endswith("Z")
    assert naive["timestamp"] == "2019-06-19T23:45:56Z"
    assert zoned["timestamp"] == "2019-06-19T21:45:56Z"


def test_unknown_fields_are_kept_with_the_event(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    event = {
        "action": "a",
        "email": "a@b.co",
        "source": {"app": "ios", "build": 7},
        "products": [{"id": "1", "variant": "red"}],
    }
    assert post(client, secret, {"events": [event]}).status_code == 202
    [kept] = stored(storage, account_id)
    assert kept["source"] == {"app": "ios", "build": 7}
    assert kept["products"] == [{"id": "1", "variant": "red"}]


def test_vendor_sdk_shapes_are_accepted(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    swift = {
        "action": "view",
        "email": "a@b.co",
        "timestamp": "2024-05-01T10:00:00Z",
        "custom": {"string": [], "numeric": [], "date": []},
    }
    kotlin = {
        "action": "buy",
        "phoneNumber": "+359123",
        "timestamp": "2024-05-01T10:00:00.123Z",
        "custom": {
            "numeric": [{"key": "size", "values": [14.0, 15.5]}],
            "date": [{"key": "until", "values": ["2022-11-01T00:00:00.000Z"]}],
        },
        "products": [{"id": "9", "quantity": 2.0}],
        "tags": ["vip"],
    }
    assert post(client, secret, {"events": [swift, kotlin]}).status_code == 202
    swift_kept, kotlin_kept = stored(storage, account_id)
    assert swift_kept["timestamp"] == "2024-05-01T10:00:00Z"
    assert kotlin_kept["custom"]["numeric"] == [{"key": "size", "values": [14.0, 15.5]}]
    assert kotlin_kept["custom"]["date"] == [{"key": "until", "values": ["2022-11-01T00:00:00Z"]}]
    assert kotlin_kept["tags"] == ["vip"]


def test_gzip_body_is_accepted(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    body = gzip.compress(json.dumps(seed_batch()).encode())
    response = post(client, secret, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 202
    assert len(stored(storage, account_id)) == 2


def test_one_bad_event_stores_nothing_and_reports_its_path(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    events = [{"action": "ok", "email": "a@b.co"}] * 3 + [{"action": "bad", "email": "nope"}]
    response = post(client, secret, {"events": events})
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == [{"path": "events[3].email", "message": body["errors"][0]["message"]}]
    assert "email address" in body["errors"][0]["message"]
    assert body["message"].startswith("events[3].email")
    assert stored(storage, account_id) == []


def test_every_problem_of_a_batch_is_listed(client: TestClient, secret: str) -> None:
    events = [
        {"action": "", "email": "a@b.co"},
        {"action": "x", "phoneNumber": "12"},
        {"action": "x", "email": "a@b.co", "locale": "english"},
        {"action": "x", "email": "a@b.co", "products": [{"id": 1.5}]},
        {"action": "x"},
        {"action": "x", "email": "a@b.co", "custom": {"boolean": []}},
        {"action": "x", "email": "a@b.co", "timestamp": "3000-01-01T00:00:00Z"},
    ]
    response = post(client, secret, {"events": events})
    assert response.status_code == 400
    paths = [error["path"] for error in response.json()["errors"]]
    assert paths == [
        "events[0].action",
        "events[1].phoneNumber",
        "events[2].locale",
        "events[3].products[0].id",
        "events[4]",
        "events[5].custom",
        "events[6].timestamp",
    ]


def test_errors_are_capped_at_one_hundred(client: TestClient, secret: str) -> None:
    response = post(client, secret, {"events": [{"action": "x", "email": "bad"}] * 250})
    assert response.status_code == 400
    assert len(response.json()["errors"]) == 100
    assert "249 more problems" in response.json()["message"]
