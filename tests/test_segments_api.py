"""Segments over HTTP, on SQLite and PostgreSQL: definitions, members, the change feed,
membership kept current by the fold, merges, erasure and the timer."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from starlette.testclient import TestClient

from eventfold.clock import now_ms
from eventfold.domain.moments import iso_from_ms
from eventfold.errors import StorageUnavailable
from eventfold.services.segment_loops import timer_step
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events, wait_for_fold

VIP = {"event": {"action": "purchase"}, "count": {"op": "gte", "value": 2}}
DAY = 86_400_000
HOUR = 3_600_000


def create(client: TestClient, secret: str, key: str, match: Any, name: str = "") -> Any:
    response = client.post(
        "/api/v0/segments",
        json={"key": key, "name": name or key, "match": match},
        headers=auth(secret),
    )
    assert response.status_code == 201, response.text
    return response.json()


def get(client: TestClient, secret: str, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=auth(secret))
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_ready(client: TestClient, secret: str, key: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        segment = get(client, secret, f"/api/v0/segments/{key}")
        if segment["status"] == "ready":
            return segment
        time.sleep(0.02)
    raise AssertionError(f"segment {key} stayed preparing")


def changes(client: TestClient, secret: str, key: str, cursor: str | None = None) -> Any:
    params = {"cursor": cursor} if cursor else {}
    return get(client, secret, f"/api/v0/segments/{key}/changes", **params)


def members(client: TestClient, secret: str, key: str) -> list[str]:
    page = get(client, secret, f"/api/v0/segments/{key}/members")
    return [
        member["emails"][0] if member["emails"] else member["profile"] for member in page["members"]
    ]


def purchases(email: str, count: int, at_ms: int | None = None) -> list[dict[str, Any]]:
    event: dict[str, Any] = {"action": "purchase", "email": email}
    if at_ms is not None:
        event["timestamp"] = iso_from_ms(at_ms)
    return [event] * count


def test_a_new_segment_is_evaluated_over_existing_profiles_then_ready(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, *purchases("ann@x.co", 2), *purchases("bob@x.co", 1))
    wait_for_fold(client)
    created = create(client, secret, "vip", VIP, name="VIP buyers")
    assert created["key"] == "vip"
    assert created["name"] == "VIP buyers"
    assert created["match"] == VIP
    assert created["version"] == 1
    assert created["status"] in ("preparing", "ready")
    assert {"createdAt", "updatedAt"} <= created.keys()
    ready = wait_until_ready(client, secret, "vip")
    assert ready["memberCount"] == 1
    assert members(client, secret, "vip") == ["ann@x.co"]
    listed = get(client, secret, "/api/v0/segments")["segments"]
    assert [(s["key"], s["status"], s["memberCount"]) for s in listed] == [("vip", "ready", 1)]


def test_folded_events_enter_people_and_the_feed_resumes_from_a_cursor(
    client: TestClient, secret: str
) -> None:
    create(client, secret, "vip", VIP)
    wait_until_ready(client, secret, "vip")
    post_events(client, secret, *purchases("ann@x.co", 2))
    wait_for_fold(client)
    first = changes(client, secret, "vip")
    assert [(c["change"], c["version"]) for c in first["changes"]] == [("entered", 1)]
    ann = get(client, secret, "/api/v0/profiles", email="ann@x.co")
    assert ann["segments"] == ["vip"]
    assert first["changes"][0]["profile"] == ann["id"]
    post_events(client, secret, *purchases("bob@x.co", 3))
    wait_for_fold(client)
    after = changes(client, secret, "vip", first["nextCursor"])
    assert [c["change"] for c in after["changes"]] == ["entered"]
    assert after["changes"][0]["seq"] > first["changes"][0]["seq"]
    assert changes(client, secret, "vip", after["nextCursor"])["changes"] == []
    assert get(client, secret, "/api/v0/profiles", email="bob@x.co")["segments"] == ["vip"]


def test_members_page_with_a_cursor(client: TestClient, secret: str) -> None:
    create(client, secret, "all", {"profile": "eventCount", "op": "gte", "value": 1})
    post_events(client, secret, *[{"action": "view", "email": f"p{i}@x.co"} for i in range(3)])
    wait_for_fold(client)
    wait_until_ready(client, secret, "all")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = get(client, secret, "/api/v0/segments/all/members", **params)
        seen += [m["emails"][0] for m in page["members"]]
        assert all(m["since"].endswith("Z") for m in page["members"])
        assert all(m["phoneNumbers"] == [] for m in page["members"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["p0@x.co", "p1@x.co", "p2@x.co"]


def test_a_changed_definition_is_a_new_version_and_moves_people(
    client: TestClient, secret: str
) -> None:
    post_events(client, secret, *purchases("ann@x.co", 2), *purchases("bob@x.co", 3))
    wait_for_fold(client)
    create(client, secret, "vip", VIP)
    wait_until_ready(client, secret, "vip")
    stricter = {"event": {"action": "purchase"}, "count": {"op": "gte", "value": 3}}
    response = client.put(
        "/api/v0/segments/vip",
        json={"key": "vip", "name": "VIP", "match": stricter},
        headers=auth(secret),
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    wait_until_ready(client, secret, "vip")
    assert members(client, secret, "vip") == ["bob@x.co"]
    feed = changes(client, secret, "vip")["changes"]
    assert [(c["change"], c["version"]) for c in feed[-1:]] == [("exited", 2)]


def test_a_merge_exits_the_merged_away_profile_and_keeps_the_person(
    client: TestClient, secret: str
) -> None:
    create(client, secret, "vip", VIP)
    wait_until_ready(client, secret, "vip")
    post_events(client, secret, *purchases("ann@x.co", 2))
    post_events(client, secret, *[{"action": "purchase", "phoneNumber": "+359888"}] * 2)
    wait_for_fold(client)
    assert len(members(client, secret, "vip")) == 2
    post_events(client, secret, {"action": "login", "email": "ann@x.co", "phoneNumber": "+359888"})
    wait_for_fold(client)
    assert members(client, secret, "vip") == ["ann@x.co"]
    feed = [c["change"] for c in changes(client, secret, "vip")["changes"]]
    assert feed == ["entered", "entered", "exited"]


def test_erasure_exits_with_no_identifier_in_the_feed(client: TestClient, secret: str) -> None:
    create(client, secret, "vip", VIP)
    wait_until_ready(client, secret, "vip")
    post_events(client, secret, *purchases("ann@x.co", 2))
    wait_for_fold(client)
    response = client.delete("/api/v0/profiles", params={"email": "ann@x.co"}, headers=auth(secret))
    assert response.status_code == 202
    feed = changes(client, secret, "vip")["changes"]
    assert [c["change"] for c in feed] == ["entered", "exited"]
    assert "ann" not in str(feed)
    assert set(feed[1]) == {"seq", "profile", "change", "at", "version"}
    assert members(client, secret, "vip") == []


def test_a_person_leaves_a_window_by_the_clock_alone(
    client: TestClient, secret: str, storage: Storage
) -> None:
    weekly = {
        "event": {"action": "purchase"},
        "count": {"op": "gte", "value": 2},
        "within": {"last": "7d"},
    }
    create(client, secret, "weekly", weekly)
    wait_until_ready(client, secret, "weekly")
    start = now_ms()
    post_events(client, secret, *purchases("ann@x.co", 2, start - 6 * DAY))
    wait_for_fold(client)
    assert members(client, secret, "weekly") == ["ann@x.co"]
    # The second purchase leaves the window 1 day from now; the timer, with a clock one
    # minute short of it, leaves her in, and one minute past it takes her out.
    timer_step(storage, lambda: start + DAY - 60_000)
    assert members(client, secret, "weekly") == ["ann@x.co"]
    timer_step(storage, lambda: start + DAY + 60_000)
    assert members(client, secret, "weekly") == []
    feed = changes(client, secret, "weekly")["changes"]
    assert [c["change"] for c in feed] == ["entered", "exited"]


def test_a_late_event_counts_in_the_window_it_belongs_to(client: TestClient, secret: str) -> None:
    weekly = {"event": {"action": "purchase"}, "within": {"last": "7d"}}
    create(client, secret, "weekly", weekly)
    wait_until_ready(client, secret, "weekly")
    post_events(client, secret, *purchases("old@x.co", 1, now_ms() - 8 * DAY))
    post_events(client, secret, *purchases("new@x.co", 1, now_ms() - 1 * DAY))
    wait_for_fold(client)
    assert members(client, secret, "weekly") == ["new@x.co"]


def test_segments_naming_segments(client: TestClient, secret: str) -> None:
    create(client, secret, "vip", VIP)
    create(
        client,
        secret,
        "vip_bg",
        {"all": [{"segment": "vip"}, {"profile": "locale", "op": "eq", "value": "bg"}]},
    )
    post_events(client, secret, *[{"action": "purchase", "email": "ann@x.co", "locale": "bg"}] * 2)
    wait_for_fold(client)
    wait_until_ready(client, secret, "vip_bg")
    assert members(client, secret, "vip_bg") == ["ann@x.co"]
    cycle = client.put(
        "/api/v0/segments/vip",
        json={"key": "vip", "name": "v", "match": {"segment": "vip_bg"}},
        headers=auth(secret),
    )
    assert cycle.status_code == 400
    assert cycle.json()["errors"][0]["message"] == (
        "segments name each other in a circle: vip -> vip_bg -> vip"
    )
    named = client.delete("/api/v0/segments/vip", headers=auth(secret))
    assert named.status_code == 409
    assert "vip_bg" in named.json()["message"]
    missing = client.post(
        "/api/v0/segments",
        json={"key": "x", "name": "x", "match": {"segment": "nope"}},
        headers=auth(secret),
    )
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["path"] == "match"


def test_errors_are_json_with_paths(client: TestClient, secret: str) -> None:
    create(client, secret, "vip", VIP)
    taken = client.post(
        "/api/v0/segments", json={"key": "vip", "name": "v", "match": VIP}, headers=auth(secret)
    )
    assert taken.status_code == 409
    assert "exists" in taken.json()["message"]
    bad = client.post(
        "/api/v0/segments",
        json={
            "key": "big",
            "name": "b",
            "match": {"all": [VIP, VIP, {"profile": "eventCount", "op": "bigger", "value": 1}]},
        },
        headers=auth(secret),
    )
    assert bad.status_code == 400
    assert bad.json() == {
        "message": "match.all[2].op: 'bigger' is not an operator for numeric fields; "
        "use one of eq, ne, gt, gte, lt, lte, between",
        "errors": [
            {
                "path": "match.all[2].op",
                "message": "'bigger' is not an operator for numeric fields; "
                "use one of eq, ne, gt, gte, lt, lte, between",
            }
        ],
    }
    key = client.post(
        "/api/v0/segments", json={"key": "VIP!", "name": "v", "match": VIP}, headers=auth(secret)
    )
    assert key.status_code == 400
    assert key.json()["errors"][0]["path"] == "key"
    missing = client.post("/api/v0/segments", json={"key": "k", "name": "v"}, headers=auth(secret))
    assert missing.status_code == 400
    assert "match" in missing.json()["message"]
    huge = {"any": [{"profile": "email", "op": "eq", "value": "x" * 1000}] * 70}
    too_big = client.post(
        "/api/v0/segments", json={"key": "huge", "name": "h", "match": huge}, headers=auth(secret)
    )
    assert too_big.status_code == 400
    assert too_big.json()["errors"][0]["path"] == "match"
    for method, path in (
        ("GET", "/api/v0/segments/nope"),
        ("GET", "/api/v0/segments/nope/members"),
        ("GET", "/api/v0/segments/nope/changes"),
        ("DELETE", "/api/v0/segments/nope"),
    ):
        response = client.request(method, path, headers=auth(secret))
        assert response.status_code == 404
        assert "nope" in response.json()["message"]
    assert client.get("/api/v0/segments").status_code == 401
    bad_cursor = client.get("/api/v0/segments/vip/changes?cursor=zzz", headers=auth(secret))
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["errors"][0]["path"] == "cursor"


def test_an_account_holds_at_most_100_segments(client: TestClient, secret: str) -> None:
    for index in range(100):
        create(client, secret, f"s{index}", {"profile": "eventCount", "op": "gt", "value": index})
    over = client.post(
        "/api/v0/segments",
        json={"key": "one_more", "name": "x", "match": VIP},
        headers=auth(secret),
    )
    assert over.status_code == 400
    assert "at most 100 segments" in over.json()["message"]


def test_segments_are_scoped_to_the_key_s_account(
    client: TestClient, secret: str, storage: Storage
) -> None:
    create(client, secret, "vip", VIP)
    other = storage.create_key("other", now_ms())[1]
    assert get(client, other, "/api/v0/segments")["segments"] == []
    assert client.get("/api/v0/segments/vip", headers=auth(other)).status_code == 404
    create(client, other, "vip", VIP)  # the same key in another account is no clash


def test_deleted_segment_is_gone(client: TestClient, secret: str) -> None:
    create(client, secret, "vip", VIP)
    response = client.delete("/api/v0/segments/vip", headers=auth(secret))
    assert response.status_code == 204
    assert client.get("/api/v0/segments/vip", headers=auth(secret)).status_code == 404


def test_two_requests_for_one_new_key_at_once_give_one_segment_and_one_409(
    storage: Storage, account_id: int
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from eventfold.errors import Conflict
    from eventfold.services.segments import SegmentService
    from eventfold.storage.base import Principal

    service = SegmentService(storage)
    principal = Principal("key", account_id, "acme")
    body = (
        b'{"key": "vip", "name": "v", "match": {"profile": "eventCount", "op": "gt", "value": 1}}'
    )

    def attempt(_: int) -> str:
        try:
            service.create(principal, body)
        except Conflict:
            return "409"
        return "201"

    with ThreadPoolExecutor(2) as pool:
        answers = sorted(pool.map(attempt, range(2)))
    assert answers == ["201", "409"]
    assert [r.key for r, _ in storage.list_segments(account_id)] == ["vip"]


def _unreadable(storage: Storage, *emails: str) -> None:
    """Makes these people's stored profiles impossible to decode."""
    for email in emails:
        storage._run_fold(  # type: ignore[attr-defined]
            lambda connection, email=email: connection.execute(
                "UPDATE profiles SET state = ? WHERE id IN"
                " (SELECT profile_id FROM identities WHERE kind = 'email' AND value = ?)",
                (b"not a state", email),
            )
        )


def test_a_person_the_timer_cannot_read_is_postponed_and_does_not_hold_up_the_others(
    client: TestClient, secret: str, storage: Storage
) -> None:
    weekly = {"event": {"action": "purchase"}, "within": {"last": "7d"}}
    create(client, secret, "weekly", weekly)
    wait_until_ready(client, secret, "weekly")
    start = now_ms()
    post_events(client, secret, *purchases("ann@x.co", 1, start - 6 * DAY))
    post_events(client, secret, *purchases("bob@x.co", 1, start - 6 * DAY))
    wait_for_fold(client)
    assert members(client, secret, "weekly") == ["ann@x.co", "bob@x.co"]
    bob = get(client, secret, "/api/v0/profiles", email="bob@x.co")["id"]
    # Re-evaluating Ann fails; setting her aside must not read her records either.
    _unreadable(storage, "ann@x.co")
    assert timer_step(storage, lambda: start + DAY + 60_000) == 2
    # Bob left the window (the feed names people by profile id, reading no profile).
    feed = changes(client, secret, "weekly")["changes"]
    assert [(c["change"], c["profile"]) for c in feed[2:]] == [("exited", bob)]
    assert timer_step(storage, lambda: start + DAY + 120_000) == 0  # Ann waits an hour
    assert timer_step(storage, lambda: start + DAY + 60_000 + HOUR) == 1  # then is tried again
    # Still a member (her timer state was kept, not dropped), and nobody else.
    assert get(client, secret, "/api/v0/segments/weekly")["memberCount"] == 1


def _ann_bought_six_days_ago(client: TestClient, secret: str) -> int:
    """A "weekly" segment (a purchase in the last 7 days) with Ann in it, who leaves it a
    day from now; returns now."""
    create(client, secret, "weekly", {"event": {"action": "purchase"}, "within": {"last": "7d"}})
    wait_until_ready(client, secret, "weekly")
    start = now_ms()
    post_events(client, secret, *purchases("ann@x.co", 1, start - 6 * DAY))
    wait_for_fold(client)
    return start


def test_postponing_leaves_a_person_who_is_no_longer_due_as_they_are(
    client: TestClient, secret: str, storage: Storage
) -> None:
    _ann_bought_six_days_ago(client, secret)
    ann = int(get(client, secret, "/api/v0/profiles", email="ann@x.co")["id"][len("prof_") :])

    def moment() -> int | None:
        return storage.segments_transaction(lambda r: r.segment_people([ann])[ann][1])

    due = moment()
    assert due is not None
    storage.segments_transaction(lambda r: r.postpone(ann, due + HOUR), due - 1)  # not due
    assert moment() == due
    storage.segments_transaction(lambda r: r.postpone(ann, due + HOUR), due)
    assert moment() == due + HOUR
    # One with no next change moment (nothing time-bound to wait for) gets none.
    post_events(client, secret, {"action": "view", "email": "bob@x.co"})
    wait_for_fold(client)
    bob = int(get(client, secret, "/api/v0/profiles", email="bob@x.co")["id"][len("prof_") :])
    storage.segments_transaction(lambda r: r.postpone(bob, due + HOUR), due + DAY)
    assert storage.segments_transaction(lambda r: r.segment_people([bob])[bob][1]) is None


class _DatabaseFailsAfterFirst:
    """The real store, whose transactions after the first (the timer's look for due
    people) fail as an unreachable database's do."""

    def __init__(self, store: Storage) -> None:
        self._store = store
        self.calls = 0

    def segments_transaction(self, job: Any, now_ms: int | None = None) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise StorageUnavailable("the database does not answer (a test's)")
        return self._store.segments_transaction(job, now_ms)


def test_a_database_failure_sets_nobody_aside_it_fails_the_timer_step(
    client: TestClient, secret: str, storage: Storage
) -> None:
    start = _ann_bought_six_days_ago(client, secret)
    failing = _DatabaseFailsAfterFirst(storage)
    with pytest.raises(StorageUnavailable):
        timer_step(cast(Storage, failing), lambda: start + DAY + 60_000)
    assert failing.calls == 2  # no person-by-person round, no set-aside
    # Ann is still due: the working timer takes her out.
    assert timer_step(storage, lambda: start + DAY + 60_000) == 1
    assert members(client, secret, "weekly") == []


def test_a_profile_the_backfill_cannot_read_is_left_out_and_the_segment_gets_ready(
    client: TestClient, secret: str, storage: Storage
) -> None:
    post_events(client, secret, *purchases("ann@x.co", 1), *purchases("bob@x.co", 1))
    wait_for_fold(client)
    _unreadable(storage, "ann@x.co")
    create(client, secret, "buyers", {"event": {"action": "purchase"}})
    wait_until_ready(client, secret, "buyers")  # was "preparing" for ever
    assert members(client, secret, "buyers") == ["bob@x.co"]


def test_a_backfill_that_cannot_read_any_of_ten_profiles_fails_instead_of_stepping_over(
    client: TestClient, secret: str, storage: Storage
) -> None:
    people = [f"p{n}@x.co" for n in range(10)]
    post_events(client, secret, *[event for email in people for event in purchases(email, 1)])
    wait_for_fold(client)
    _unreadable(storage, *people)
    create(client, secret, "buyers", {"event": {"action": "purchase"}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the backfill loop fails, says so, and tries again
        segments = client.get("/healthz").json()["segments"]
        if segments["lastError"] is not None:
            break
        time.sleep(0.05)
    assert segments["lastError"].startswith("DecodeError: JSON is malformed")
    assert get(client, secret, "/api/v0/segments/buyers")["status"] == "preparing"
