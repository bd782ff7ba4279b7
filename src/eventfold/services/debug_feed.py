"""The live feed behind the debugger page: an account's events as they are accepted and
folded, its segments' entries and exits, and its rejected batches.

Accepted events come from the database, so every server process sees all of them;
rejected batches are never stored and are kept in a small ring in each process, so the
feed shows those rejected by the process that serves it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventfold.clock import now_ms
from eventfold.domain.moments import iso_from_ms
from eventfold.domain.views import public_profile_id
from eventfold.errors import EventfoldError, InvalidRequest
from eventfold.services.profiles import event_view
from eventfold.storage.base import EventQuery, Principal, ProfileStore
from eventfold.storage.segment_contract import SegmentStore

MAX_REJECTIONS_KEPT = 1_000
MAX_EVENTS_PER_POLL = 200


@dataclass(frozen=True, slots=True)
class Rejection:
    number: int
    account_id: int
    at_ms: int
    status: int
    message: str
    errors: list[dict[str, str]]


class RejectionRing:
    """The latest rejected batches of this process, for the debugger."""

    def __init__(self) -> None:
        self._entries: deque[Rejection] = deque(maxlen=MAX_REJECTIONS_KEPT)
        self._numbers = itertools.count(1)

    def record(self, principal: Principal, error: EventfoldError) -> None:
        errors = error.errors[:5] if isinstance(error, InvalidRequest) else []
        self._entries.append(
            Rejection(
                next(self._numbers),
                principal.account_id,
                now_ms(),
                error.status,
                error.message,
                [{"path": e.path, "message": e.message} for e in errors],
            )
        )

    def latest_number(self) -> int:
        return self._entries[-1].number if self._entries else 0

    def since(self, number: int, account_id: int) -> list[Rejection]:
        return [r for r in self._entries if r.number > number and r.account_id == account_id]


@dataclass
class FeedCursor:
    """Where one debugger connection is in the feed."""

    last_seq: int
    last_rejection: int
    last_change: int = 0  # segment feed position
    unfolded: set[int] = field(default_factory=set)


class DebugFeed:
    def __init__(
        self, store: ProfileStore, rejections: RejectionRing, segments: SegmentStore
    ) -> None:
        self._store = store
        self._rejections = rejections
        self._segments = segments

    def start(self, principal: Principal) -> FeedCursor:
        """A cursor at "now": the feed shows what happens from here on."""
        newest = self._store.list_events(EventQuery(principal.account_id, limit=1))
        return FeedCursor(
            newest[0].seq if newest else 0,
            self._rejections.latest_number(),
            self._segments.last_segment_change(),
        )

    def poll(self, principal: Principal, cursor: FeedCursor) -> Iterator[tuple[str, Any]]:
        """What happened since the cursor, as (kind, data): accepted, folded, rejected."""
        account = principal.account_id
        new = self._store.list_events(
            EventQuery(account, limit=MAX_EVENTS_PER_POLL, after_seq=cursor.last_seq)
        )
        for event in reversed(new):
            cursor.last_seq = max(cursor.last_seq, event.seq)
            yield "accepted", {"seq": event.seq, "event": event_view(event)}
            if event.profile_id is None:
                cursor.unfolded.add(event.seq)
        if cursor.unfolded:
            profiles = self._store.event_profiles(account, sorted(cursor.unfolded))
            cursor.unfolded &= profiles.keys()  # erased events are gone for good
            for seq, profile_id in profiles.items():
                if profile_id is not None:
                    cursor.unfolded.discard(seq)
                    yield "folded", {"seq": seq, "profile": public_profile_id(profile_id)}
        changes = self._segments.account_changes(account, cursor.last_change, MAX_EVENTS_PER_POLL)
        for position, key, profile_id, change, at_ms in changes:
            cursor.last_change = position
            yield (
                "segment",
                {
                    "segment": key,
                    "profile": public_profile_id(profile_id),
                    "change": change,
                    "at": iso_from_ms(at_ms),
                },
            )
        for rejection in self._rejections.since(cursor.last_rejection, account):
            cursor.last_rejection = rejection.number
            yield (
                "rejected",
                {
                    "at": iso_from_ms(rejection.at_ms),
                    "status": rejection.status,
                    "message": rejection.message,
                    "errors": rejection.errors,
                },
            )
