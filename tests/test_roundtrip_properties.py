"""Anything accepted reads back as sent (up to the documented normalisation); anything
rejected leaves no trace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from eventfold.clock import now_ms
from eventfold.domain.events import EVENT_FIELDS
from eventfold.domain.keys import hash_secret
from eventfold.storage.base import Storage
from tests.conftest import auth, wait_for_fold

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)
names = st.text(min_size=1, max_size=40)


def typed_fields(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(
        st.fixed_dictionaries({"key": names, "values": st.lists(values, max_size=3)}), max_size=2
    )


customs = st.fixed_dictionaries(
    {},
    optional={
        "string": typed_fields(st.text(max_size=50)),
        "numeric": typed_fields(st.floats(allow_nan=False, allow_infinity=False)),
        "date": typed_fields(moments.map(lambda m: m.isoformat())),
    },
)
valid_events = st.fixed_dictionaries(
    {
        "action": names,
        "email": st.from_regex(r"[A-Za-z0-9.]{1,10}@[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True),
    },
    optional={
        "phoneNumber": st.from_regex(r"\+[0-9 ]{4,15}", fullmatch=True).filter(
            lambda p: 4 <= len(p.replace(" ", "")) - 1 <= 15
        ),
        "profileId": names,
        "locale": st.sampled_from(["en", "BG", "de"]),
        "products": st.lists(
            st.fixed_dictionaries(
                {"id": st.one_of(names, st.integers(-(2**63), 2**63 - 1))},
                optional={"quantity": st.floats(min_value=0, max_value=1e6), "custom": customs},
            ),
            max_size=3,
        ),
        "custom": customs,
        "tags": st.lists(names, max_size=3),
        "timestamp": moments.map(lambda m: m.isoformat()),
    },
).flatmap(
    lambda event: st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in EVENT_FIELDS),
        json_values,
        max_size=2,
    ).map(lambda extras: {**extras, **event})
)
# One bad field, to mix rejected batches in with the accepted ones.
CORRUPTIONS: list[dict[str, Any]] = [
    {"action": ""},
    {"email": "not-an-email"},
    {"phoneNumber": "12"},
    {"locale": "english"},
    {"tags": [""]},
    {"timestamp": "3000-01-01T00:00:00Z"},
    {"products": [{"id": 1.5}]},
    {"custom": {"boolean": []}},
    {"action": "a" * 257},
    {"profileId": 7},
]
corruptions = st.sampled_from(CORRUPTIONS)


@st.composite
def batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    batch = draw(st.lists(valid_events, min_size=1, max_size=4))
    if draw(st.booleans()):
        index = draw(st.integers(0, len(batch) - 1))
        batch[index] = {**batch[index], **draw(corruptions)}
    return batch


def expected_form(event: dict[str, Any]) -> dict[str, Any]:
    """The event as docs/api.md says it is stored."""
    kept = dict(event)
    if "email" in kept:
        kept["email"] = kept["email"].strip().lower()
    if "phoneNumber" in kept:
        kept["phoneNumber"] = kept["phoneNumber"].translate(str.maketrans("", "", " -()"))
    if "locale" in kept:
        kept["locale"] = kept["locale"].lower()
    kept["products"] = [{**p, "id": str(p["id"])} for p in kept.get("products", [])]
    for holder in [kept, *kept["products"]]:
        if "custom" in holder:  # missing and empty typed lists are the same
            holder["custom"] = {kind: v for kind, v in holder["custom"].items() if v}
    if not kept["products"]:
        del kept["products"]
    if kept.get("tags") == []:
        del kept["tags"]
    return kept


def same_moment(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


def normalise_dates(event: dict[str, Any]) -> dict[str, Any]:
    """Dates compared as moments, not strings (they are stored in UTC with 'Z')."""
    out = dict(event)
    out.pop("timestamp", None)
    for holder in [out, *out.get("products", [])]:
        for field in holder.get("custom", {}).get("date", []):
            field["values"] = [datetime.fromisoformat(v) for v in field["values"]]
    return out


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches())
def test_accepted_batches_read_back_as_sent_and_rejected_ones_leave_no_trace(
    client: TestClient, storage: Storage, batch: list[dict[str, Any]]
) -> None:
    secret = storage.create_key(f"account-{uuid.uuid4()}", now_ms())[1]  # a fresh account
    response = client.post("/api/v0/events", json={"events": batch}, headers=auth(secret))
    if response.status_code == 202:
        wait_for_fold(client)
    new = client.get("/api/v0/events", params={"limit": 1000}, headers=auth(secret)).json()[
        "events"
    ]
    hypothesis.event(f"status {response.status_code}")
    if response.status_code != 202:
        assert response.status_code in (400, 413), response.text
        assert new == []
        principal = storage.find_key(hash_secret(secret))
        assert principal is not None
        assert storage.count_events(principal.account_id) == 0
        return
    assert len(new) == len(batch)
    for sent, stored in zip(batch, reversed(new), strict=True):
        stored = {k: v for k, v in stored.items() if k not in ("receivedAt", "foldedIntoProfile")}
        expected = expected_form(sent)
        if "timestamp" in expected:
            assert same_moment(stored["timestamp"].replace("Z", "+00:00"), expected["timestamp"])
        assert normalise_dates(stored) == normalise_dates(expected)
