"""Every row of the error table: the status, the JSON shape, and that nothing is stored."""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.http.app import create_app
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage
from tests.conftest import auth, seed_batch, stored

SEED = json.dumps(seed_batch()).encode()


def assert_error(response: object, status: int, *words: str) -> dict[str, object]:
    from httpx2 import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["message"], str)
    assert body["message"]
    for word in words:
        assert word in body["message"], body["message"]
    return dict(body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["not valid JSON"]),
        (b'{"events": [', ["not valid JSON"]),
        (b"[1, 2]", ["JSON object", "events"]),
        (b'{"evnts": []}', ["events"]),
        (b'{"events": {}}', ["events"]),
        (b'{"events": [1e999]}', ["out of range"]),
        (b'{"events": ["\xff"]}', ["UTF-8"]),
        (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
    ],
)
def test_malformed_bodies_are_400(
    client: TestClient, secret: str, body: bytes, words: list[str]
) -> None:
    response = client.post("/api/v0/events", content=body, headers=auth(secret))
    assert_error(response, 400, *words)


@pytest.mark.parametrize(
    ("authorization", "words"),
    [
        (None, ["no secret key"]),
        ("Basic dXNlcjpwYXNz", ["malformed"]),
        ("Bearer", ["malformed"]),
        ("Bearer efsk_not-a-real-key", ["unknown or revoked"]),
        ("Bearer " + "x" * 5000, ["too long"]),
    ],
)
def test_missing_malformed_or_unknown_keys_are_401(
    client: TestClient, authorization: str | None, words: list[str]
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = client.post("/api/v0/events", content=SEED, headers=headers)
    assert_error(response, 401, *words)
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_401_never_echoes_the_key(client: TestClient) -> None:
    response = client.post(
        "/api/v0/events", content=SEED, headers=auth("efsk_secret-value-that-must-not-leak")
    )
    assert "secret-value" not in response.text


def test_revoked_key_is_401(client: TestClient, storage: Storage, secret: str) -> None:
    [record] = storage.list_keys()
    assert storage.revoke_key(record.id, now_ms())
    response = client.post("/api/v0/events", content=SEED, headers=auth(secret))
    assert_error(response, 401, "revoked")


def test_unknown_path_is_json_404_and_wrong_method_json_405(client: TestClient) -> None:
    assert_error(client.get("/api/v0/nothing"), 404, "no such endpoint")
    response = client.put("/api/v0/events", content=b"{}")
    assert_error(response, 405, "POST")


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Content-Type": "text/plain"}, ["application/json", "text/plain"]),
        ({"Content-Type": "application/x-www-form-urlencoded"}, ["application/json"]),
        ({"Content-Type": ""}, ["no Content-Type"]),
        ({"Content-Encoding": "br"}, ["'br'", "gzip"]),
    ],
)
def test_other_content_types_and_encodings_are_415(
    client: TestClient, secret: str, headers: dict[str, str], words: list[str]
) -> None:
    response = client.post("/api/v0/events", content=SEED, headers={**auth(secret), **headers})
    assert_error(response, 415, *words)


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[tuple[TestClient, str, Storage]]:
    settings = Settings(
        fold_process=False,
        database_url=f"sqlite:///{tmp_path / 'small.db'}",
        limits=Limits(max_body_bytes=65536, max_events_per_batch=10),
    )
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    with TestClient(create_app(build_services(settings, storage))) as client:
        yield client, secret, storage
    storage.close()


def test_body_over_the_limit_is_413(small_client: tuple[TestClient, str, Storage]) -> None:
    client, secret, _ = small_client
    big = {"events": [{"action": "x" * 200, "email": "a@b.co", "tags": ["t" * 200] * 400}]}
    response = client.post("/api/v0/events", content=json.dumps(big).encode(), headers=auth(secret))
    assert_error(response, 413, "65536 bytes")


def test_gzip_bomb_is_413_without_inflating_it(
    small_client: tuple[TestClient, str, Storage],
) -> None:
    client, secret, _ = small_client
    bomb = gzip.compress(b'{"events": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 65536
    response = client.post(
        "/api/v0/events", content=bomb, headers={**auth(secret), "Content-Encoding": "gzip"}
    )
    assert_error(response, 413, "after decompression")


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(SEED)[:-10], gzip.compress(SEED) + b"junk"]
)
def test_broken_gzip_is_400(client: TestClient, secret: str, body: bytes) -> None:
    response = client.post(
        "/api/v0/events", content=body, headers={**auth(secret), "Content-Encoding": "gzip"}
    )
    assert_error(response, 400, "gzip")


def test_too_many_events_is_413(small_client: tuple[TestClient, str, Storage]) -> None:
    client, secret, _ = small_client
    body = json.dumps({"events": [{"action": "a", "email": "a@b.co"}] * 11}).encode()
    response = client.post("/api/v0/events", content=body, headers=auth(secret))
    assert_error(response, 413, "at most 10 events", "11")


def test_locked_database_is_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    settings = Settings(
        fold_process=False, database_url=f"sqlite:///{path}", sqlite_busy_timeout_ms=50
    )
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    other_process = sqlite3.connect(path, isolation_level=None)
    with TestClient(create_app(build_services(settings, storage))) as client:
        other_process.execute("BEGIN EXCLUSIVE")
        response = client.post("/api/v0/events", content=SEED, headers=auth(secret))
        body = assert_error(response, 503, "nothing was stored")
        assert "locked" in str(body["message"])
        assert response.headers["retry-after"] == "1"
        other_process.execute("ROLLBACK")
        response = client.post("/api/v0/events", content=SEED, headers=auth(secret))
        assert response.status_code == 202
    principal = storage.find_key(hash_secret(secret))
    assert principal is not None
    assert len(stored(storage, principal.account_id)) == 2
    other_process.close()
    storage.close()


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ({"action": "a\u0000b"}, "events[0].action"),
        ({"profileId": "p\u0000"}, "events[0].profileId"),
        ({"tags": ["ok", "t\u0000"]}, "events[0].tags[1]"),
        ({"products": [{"id": "\u0000"}]}, "events[0].products[0].id"),
        ({"custom": {"numeric": [{"key": "k\u0000", "values": [1]}]}}, "events[0].custom"),
    ],
)
def test_nul_in_a_name_or_id_is_400_with_its_path(
    client: TestClient,
    secret: str,
    storage: Storage,
    account_id: int,
    event: dict[str, object],
    path: str,
) -> None:
    body = json.dumps({"events": [{"action": "view", "email": "a@b.co", **event}]})
    assert "\\u0000" in body  # JSON's only way to carry a NUL
    response = client.post("/api/v0/events", content=body, headers=auth(secret))
    assert path in str(assert_error(response, 400, "NUL")["message"])
    assert stored(storage, account_id) == []


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    body = json.dumps({"events": [{"action": "a\\u0000", "email": "a@b.co"}]})
    response = client.post("/api/v0/events", content=body, headers=auth(secret))
    assert response.status_code == 202, response.text
    assert [event["action"] for event in stored(storage, account_id)] == ["a\\u0000"]


def test_a_product_id_written_as_a_whole_float_is_that_integer(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    """JSON (and so JSON Schema's "integer") does not tell 42.0 from 42; a fraction is
    still an error."""
    for product_id in (42, 42.0):
        body = {"events": [{"action": "buy", "email": "a@b.co", "products": [{"id": product_id}]}]}
        response = client.post("/api/v0/events", json=body, headers=auth(secret))
        assert response.status_code == 202, response.text
    as_int, as_float = (event["products"] for event in stored(storage, account_id))
    assert as_float == as_int
    body["events"][0]["products"] = [{"id": 42.5}]
    response = client.post("/api/v0/events", json=body, headers=auth(secret))
    assert "events[0].products[0].id" in str(assert_error(response, 400)["message"])


def test_an_email_is_at_most_254_characters_as_sent_like_the_documents_max_length(
    client: TestClient, secret: str, storage: Storage, account_id: int
) -> None:
    fits = "a" * 244 + "@b.example"  # 254 characters
    padded = " " + fits  # 255 as sent, 254 once trimmed
    document = client.get("/openapi.json").json()
    email = document["components"]["schemas"]["Event"]["properties"]["email"]["anyOf"][0]
    assert email["maxLength"] == len(fits)
    response = client.post(
        "/api/v0/events", json={"events": [{"action": "a", "email": fits}]}, headers=auth(secret)
    )
    assert response.status_code == 202, response.text
    response = client.post(
        "/api/v0/events", json={"events": [{"action": "a", "email": padded}]}, headers=auth(secret)
    )
    assert "events[0].email" in str(assert_error(response, 400)["message"])
    assert [event["email"] for event in stored(storage, account_id)] == [fits]
