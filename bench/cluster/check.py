"""The check after a scenario, through the API only: every event answered 202 is read
back exactly once (``GET /api/v0/events``), and each person's profile counts exactly the
events stored for them (``GET /api/v0/profiles``: no event folded twice or left out)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx2

from bench.cluster.ledger import Ledger

# After everything acknowledged is in and folded: how long to wait for anything that
# might still arrive (a publish that a partitioned node held back, say) before the
# final reading.
SETTLE_SECONDS = 3.0


@dataclass
class Verdict:
    acknowledged: int  # events answered 202
    stored: int  # events read back, each copy counted
    lost: int  # acknowledged events not read back, or left out of their profile
    duplicated: int  # copies beyond the first, and events counted twice in a profile
    missing: int  # of the lost: acknowledged events not read back at all
    profile_shortfall: int  # of the lost: stored events their person's profile lacks
    split_people: int  # people whose events name more than one profile
    stored_unacknowledged: int  # stored though never answered 202 (a 503 may have stored)
    half_stored_batches: int  # batches with some but not all of their events stored
    unfolded: int  # events not in a profile when the check gave up waiting
    profiles: int  # people whose profile was compared
    seconds_until_complete: float  # from the check's start until all was read back
    event_counts: dict[str, int]  # each person's eventCount, for the recheck at the end


def verify(urls: list[str], ledger: Ledger, timeout: float = 120) -> Verdict:
    """Reads the scenario's account back through the API, waiting up to ``timeout`` for
    everything acknowledged to be stored and folded, and judges what it read."""
    started = time.monotonic()
    expected = ledger.acknowledged_ids()
    while True:
        events = read_events(urls, ledger.secret)
        stored = {event["n"] for event in events}
        unfolded = sum(event["foldedIntoProfile"] is None for event in events)
        complete = expected <= stored and unfolded == 0
        if complete or time.monotonic() - started > timeout:
            break
        time.sleep(1)
    until_complete = time.monotonic() - started
    if complete:
        time.sleep(SETTLE_SECONDS)
        events = read_events(urls, ledger.secret)
    counted = profile_counts(urls, ledger.secret, sorted({event["email"] for event in events}))
    return judge(ledger, events, counted, until_complete)


def judge(
    ledger: Ledger,
    events: list[dict[str, Any]],
    counted: dict[str, int],
    seconds_until_complete: float = 0.0,
) -> Verdict:
    """What the events read back (each with its id ``n``, its ``email`` and
    ``foldedIntoProfile``) and each person's profile ``eventCount`` say of what the
    ledger says was acknowledged."""
    expected = ledger.acknowledged_ids()
    copies = Counter(event["n"] for event in events)
    per_person = Counter(event["email"] for event in events)
    profiles_of: dict[str, set[str]] = {}
    for event in events:
        profiles_of.setdefault(event["email"], set()).add(str(event["foldedIntoProfile"]))
    under = sum(max(0, stored - counted.get(email, 0)) for email, stored in per_person.items())
    over = sum(max(0, counted.get(email, 0) - stored) for email, stored in per_person.items())
    batches = Counter(event_id.rpartition(".")[0] for event_id in copies)
    missing = sum(1 for event_id in expected if not copies[event_id])
    return Verdict(
        acknowledged=len(expected),
        stored=len(events),
        lost=missing + under,
        duplicated=sum(count - 1 for count in copies.values()) + over,
        missing=missing,
        profile_shortfall=under,
        split_people=sum(1 for profiles in profiles_of.values() if len(profiles) > 1),
        stored_unacknowledged=sum(1 for event_id in copies if event_id not in expected),
        half_stored_batches=sum(
            1 for batch, found in batches.items() if found != ledger.sizes.get(batch, found)
        ),
        unfolded=sum(event["foldedIntoProfile"] is None for event in events),
        profiles=len(per_person),
        seconds_until_complete=seconds_until_complete,
        event_counts=counted,
    )


def profile_counts(urls: list[str], secret: str, emails: list[str]) -> dict[str, int]:
    """Each person's ``eventCount`` (0 when there is no profile)."""
    counts = {}
    with httpx2.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
        for number, email in enumerate(sorted(emails)):
            answer = _get(http, urls, number, "/api/v0/profiles", {"email": email})
            counts[email] = answer["eventCount"] if answer is not None else 0
    return counts


def recheck(urls: list[str], secret: str, verdict: Verdict) -> int:
    """Events by which the profiles changed since the check: anything that arrived late
    (there should be nothing)."""
    now = profile_counts(urls, secret, list(verdict.event_counts))
    return sum(abs(now[email] - count) for email, count in verdict.event_counts.items())


def read_events(urls: list[str], secret: str) -> list[dict[str, Any]]:
    """Every event of the key's account, through the paged listing."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with httpx2.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
        turn = 0
        while True:
            page = _get(http, urls, turn, "/api/v0/events", params)
            if page is None:
                raise RuntimeError("no API node lists the events")
            events += page["events"]
            if page["nextCursor"] is None:
                return events
            params["cursor"] = page["nextCursor"]
            turn += 1


def _get(http: httpx2.Client, urls: list[str], turn: int, path: str, params: dict[str, Any]) -> Any:
    """A 200's JSON from the API nodes in turn (a node may be down for a while), or None
    on a 404; tries for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        url = urls[turn % len(urls)]
        try:
            answer = http.get(f"{url}{path}", params=params)
            if answer.status_code == 200:
                return answer.json()
            if answer.status_code == 404:
                return None
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET {path} got no answer from {urls}")
        turn += 1
        time.sleep(0.2)
