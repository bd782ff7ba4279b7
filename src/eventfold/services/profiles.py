"""Reading back and erasing what was folded: profiles and events, scoped to an account."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from eventfold.domain.moments import to_epoch_ms
from eventfold.domain.profile import ProfileState, ProfileView, profile_view
from eventfold.domain.views import PROFILE_ID_PREFIX, public_profile_id, stored_event_view
from eventfold.errors import InvalidRequest, MergedAway, NotFound
from eventfold.services.fold import fold_everything
from eventfold.storage.base import (
    EventLog,
    EventQuery,
    Principal,
    ProfileStore,
    StoredEvent,
)
from eventfold.storage.segment_contract import SegmentStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000


@dataclass(frozen=True, slots=True)
class EventListing:
    """The query of ``GET /api/v0/events`` as the client sent it (strings, unparsed)."""

    cursor: str | None = None
    event_types: tuple[str, ...] = ()
    start: str | None = None
    end: str | None = None
    person: tuple[str, str] | None = None
    limit: str | None = None
    order: str | None = None  # "desc" (newest first, the default) or "asc"


class ProfileService:
    def __init__(self, store: ProfileStore, log: EventLog, segments: SegmentStore) -> None:
        self._store = store
        self._log = log
        self._segments = segments

    def get_profile(self, principal: Principal, person: tuple[str, str]) -> ProfileView:
        """The person's profile as the API shows it; NotFound if there is none."""
        found = self._store.find_profile(principal.account_id, *person)
        if found is None:
            raise NotFound(
                f"no profile with {person[0]} {person[1]!r} in this account (events are "
                "folded within seconds of their 202)"
            )
        profile_id, state = found
        return self._view(profile_id, state)

    def get_profile_by_id(self, principal: Principal, public_id: str) -> ProfileView:
        """The profile with eventfold's own id (``prof_…``); NotFound, or MergedAway
        naming the profile it was merged into."""
        number = public_id.removeprefix(PROFILE_ID_PREFIX)
        if not public_id.startswith(PROFILE_ID_PREFIX) or not number.isdigit() or len(number) > 18:
            raise InvalidRequest(
                f"profile id: {public_id[:40]!r} is not an eventfold profile id like 'prof_123' "
                "(to look up the shop's own id, use ?profileId=)"
            )
        found = self._store.profile_by_id(principal.account_id, int(number))
        if found is None:
            raise NotFound(f"no profile {public_id} in this account")
        if isinstance(found, int):
            survivor = public_profile_id(found)
            raise MergedAway(
                f"profile {public_id} was merged into {survivor} (an event linked their "
                f"identifiers); ask for {survivor}",
                survivor,
            )
        return self._view(int(number), found)

    def _view(self, profile_id: int, state: ProfileState) -> ProfileView:
        view = profile_view(public_profile_id(profile_id), state)
        view.segments = self._segments.profile_segments(profile_id)
        return view

    async def erase(self, principal: Principal, person: tuple[str, str]) -> None:
        """Erases the person's profile and all their events; unknown people are fine."""
        bound = await self._log.erasure_bound()
        await self._store.erase_person(
            principal.account_id, *person, fold_everything, log_position=bound
        )

    def list_events(self, principal: Principal, listing: EventListing) -> dict[str, Any]:
        """A page of the account's events, newest (or oldest) first, and the cursor of
        the next page."""
        limit = _parse_limit(listing.limit)
        ascending = _parse_order(listing.order)
        cursor = _decode_cursor(listing.cursor, ascending)
        query = EventQuery(
            account_id=principal.account_id,
            limit=limit + 1,
            before_seq=None if ascending else cursor,
            after_seq=cursor if ascending else None,
            ascending=ascending,
            actions=listing.event_types,
            start_ms=_parse_time("startDateTime", listing.start),
            end_ms=_parse_time("endDateTime", listing.end),
            person=listing.person,
        )
        events = self._store.list_events(query)
        next_cursor = (
            _encode_cursor(events[limit - 1].seq, ascending) if len(events) > limit else None
        )
        return {"events": [event_view(e) for e in events[:limit]], "nextCursor": next_cursor}


def event_view(event: StoredEvent) -> dict[str, Any]:
    """A stored event as the API returns it: its fields, when it arrived, its profile."""
    return stored_event_view(event.document, event.received_at_ms, event.profile_id)


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit: must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _parse_time(name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return to_epoch_ms(msgspec.convert(raw, datetime))
    except msgspec.ValidationError:  # also a moment outside years 1 to 9999 in UTC
        raise InvalidRequest(
            f"{name}: {raw[:80]!r} is not an ISO-8601 date-time like '2024-05-01T10:00:00Z'"
        ) from None


def _parse_order(raw: str | None) -> bool:
    """Whether the listing is oldest first."""
    if raw is None or raw == "desc":
        return False
    if raw == "asc":
        return True
    raise InvalidRequest(
        f"order: {raw[:20]!r} is not 'asc' (oldest first) or 'desc' (newest first)"
    )


# A cursor says which way it pages, so that one cannot be used the other way by mistake.
_CURSOR_VERSIONS = {False: "v1", True: "v1a"}


def _encode_cursor(seq: int, ascending: bool) -> str:
    text = f"{_CURSOR_VERSIONS[ascending]}:{seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, ascending: bool) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, seq = text.partition(":")
        if version in _CURSOR_VERSIONS.values() and seq.isdigit():
            if version != _CURSOR_VERSIONS[ascending]:
                raise InvalidRequest(
                    "cursor: it continues a listing in the other order; pass the same "
                    "'order' as the request that gave it"
                )
            return int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidRequest("cursor: not a cursor this server gave out; pass nextCursor as it came")
