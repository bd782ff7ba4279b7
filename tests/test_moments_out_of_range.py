"""A date-time that names years 1 to 9999 but falls outside them once in UTC
(0001-01-01T00:00:00+01:00) is the client's mistake: a 400 naming the field wherever a
date-time is read, never the 500 that Python's OverflowError made of it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import auth

EARLY = "0001-01-01T00:00:00+01:00"
LATE = "9999-12-31T23:59:59-01:00"


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ({"timestamp": EARLY}, "events[0].timestamp"),
        ({"custom": {"date": [{"key": "k", "values": [LATE]}]}}, "events[0].custom.date[0]"),
        (
            {"products": [{"id": "1", "custom": {"date": [{"key": "k", "values": [EARLY]}]}}]},
            "events[0].products[0].custom.date[0]",
        ),
    ],
)
def test_an_event_date_outside_utc_years_is_400(
    client: TestClient, secret: str, event: dict[str, Any], path: str
) -> None:
    body = {"events": [{"action": "a", "email": "a@b.co", **event}]}
    response = client.post("/api/v0/events", json=body, headers=auth(secret))
    assert response.status_code == 400, response.text
    assert path in response.json()["message"]
    assert "years 1 to 9999" in response.json()["message"]


def test_query_and_body_date_times_outside_utc_years_are_400(
    client: TestClient, secret: str
) -> None:
    for path, params, name in (
        ("/api/v0/events", {"startDateTime": EARLY}, "startDateTime"),
        ("/api/v0/events", {"endDateTime": LATE}, "endDateTime"),
        ("/api/v0/profiles/export", {"since": EARLY}, "since"),
    ):
        response = client.get(path, params=params, headers=auth(secret))
        assert response.status_code == 400, (path, response.text)
        assert name in response.json()["message"]
    definition = {"profile": "lastSeen", "op": "before", "value": EARLY}
    response = client.post(
        "/api/v0/segments",
        json={"key": "x", "name": "x", "match": definition},
        headers=auth(secret),
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["path"] == "match.value"
