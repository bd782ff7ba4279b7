"""GET /api/v0/events: filters, paging with an opaque cursor, and what each event shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.http.app import create_app
from eventfold.services.fold import FoldService
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events, wait_for_fold


def listing(client: TestClient, secret: str, **params: Any) -> Any:
    response = client.get("/api/v0/events", params=params, headers=auth(secret))
    assert response.status_code == 200, response.text
    return response.json()


def test_events_are_listed_newest_first_as_stored_with_receipt_and_profile(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, {"action": "a", "email": "x@b.co", "extra": [1, 2]})
    post_events(client, secret, {"action": "b", "email": "x@b.co"})
    wait_for_fold(client)
    page = listing(client, secret)
    assert [e["action"] for e in page["events"]] == ["b", "a"]
    assert page["nextCursor"] is None
    oldest = page["events"][1]
    assert oldest["extra"] == [1, 2]
    assert oldest["receivedAt"].endswith("Z")
    assert oldest["foldedIntoProfile"].startswith("prof_")


def test_paging_while_new_events_arrive_neither_skips_nor_repeats(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, *[{"action": f"e{i}", "email": "x@b.co"} for i in range(25)])
    seen: list[str] = []
    page = listing(client, secret, limit=10)
    while True:
        seen += [e["action"] for e in page["events"]]
        post_events(client, secret, {"action": "late", "email": "x@b.co"})
        if page["nextCursor"] is None:
            break
        page = listing(client, secret, limit=10, cursor=page["nextCursor"])
    assert seen == [f"e{i}" for i in reversed(range(25))]


def test_order_asc_pages_oldest_first_with_the_same_cursor_rules(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, *[{"action": f"e{i}", "email": "x@b.co"} for i in range(25)])
    seen: list[str] = []
    page = listing(client, secret, limit=10, order="asc")
    while page["nextCursor"] is not None:
        seen += [e["action"] for e in page["events"]]
        cursor = page["nextCursor"]
        page = listing(client, secret, limit=10, order="asc", cursor=cursor)
    seen += [e["action"] for e in page["events"]]
    assert seen == [f"e{i}" for i in range(25)]
    # A cursor continues the order it was given for, and says so otherwise.
    response = client.get(
        "/api/v0/events", params={"cursor": cursor, "order": "desc"}, headers=auth(secret)
    )
    assert response.status_code == 400
    assert "other order" in response.json()["message"]
    response = client.get("/api/v0/events", params={"order": "up"}, headers=auth(secret))
    assert response.status_code == 400
    assert response.json()["message"].startswith("order:")


def test_filters_by_action_time_and_person(client: TestClient, secret: str) -> None:
    post_events(
        client,
        secret,
        {"action": "search", "email": "x@b.co", "timestamp": "2024-01-01T00:00:00Z"},
        {"action": "buy", "email": "x@b.co", "timestamp": "2024-02-01T00:00:00Z"},
        {"action": "view", "phoneNumber": "+3591234", "timestamp": "2024-03-01T00:00:00Z"},
    )

    def actions(**params: Any) -> list[str]:
        return [e["action"] for e in listing(client, secret, **params)["events"]]

    assert actions(**{"eventTypes[]": ["search", "view"]}) == ["view", "search"]
    assert actions(startDateTime="2024-02-01T00:00:00Z") == ["view", "buy"]
    assert actions(endDateTime="2024-02-01T00:00:00") == ["search"]
    assert actions(phoneNumber="+359 1234") == ["view"]  # matched before or after folding
    wait_for_fold(client)
    assert actions(email="X@b.co") == ["buy", "search"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"cursor": "garbage!"},
        {"startDateTime": "yesterday"},
        {"email": "nope"},
    ],
)
def test_bad_query_parameters_are_400(
    client: TestClient, secret: str, params: dict[str, str]
) -> None:
    response = client.get("/api/v0/events", params=params, headers=auth(secret))
    assert response.status_code == 400
    assert next(iter(params)) in response.json()["message"]


@pytest.fixture
def unfolded(tmp_path: Path) -> Iterator[tuple[TestClient, str, Storage]]:
    """A server that does not fold, as when `eventfold worker` runs elsewhere and is down."""
    settings = Settings(
        fold_process=False,
        database_url=f"sqlite:///{tmp_path / 'u.db'}",
        fold_in_server=False,
        fold_lag_cache_seconds=0.001,  # the lag as it is now, not half a second ago
    )
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    with TestClient(create_app(build_services(settings, storage))) as client:
        yield client, secret, storage
    storage.close()


def test_events_are_listed_once_folded_and_erasure_reaches_the_log(
    unfolded: tuple[TestClient, str, Storage],
) -> None:
    client, secret, storage = unfolded
    post_events(
        client,
        secret,
        {"action": "a", "email": "gone@b.co"},
        {"action": "b", "phoneNumber": "+35955", "email": "gone@b.co"},
        {"action": "c", "email": "kept@b.co"},
    )
    # In the log, not folded yet: listed (like profiles) once the fold has made their rows.
    assert listing(client, secret)["events"] == []
    assert client.get("/healthz").json()["lag"]["events"] == 3
    response = client.delete(
        "/api/v0/profiles", params={"phoneNumber": "+35955"}, headers=auth(secret)
    )
    assert response.status_code == 202
    assert [e["action"] for e in listing(client, secret)["events"]] == ["c"]
    assert FoldService(storage).fold_pending(100) == 0
    response = client.get("/api/v0/profiles", params={"email": "gone@b.co"}, headers=auth(secret))
    assert response.status_code == 404
