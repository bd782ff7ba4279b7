"""The wire format of ``POST /api/v0/profiles`` (profile upserts), as msgspec Structs.

An upsert sets a person's custom fields and adds or removes tags without an event. It
travels the events' road (validated, appended to the log as one record per request,
folded at its own position), but it is not an event: it is never listed, counted in
``eventCount`` or ``actions``, or matched by ``event.matched`` webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import GenericAlias
from typing import Any, NamedTuple

import msgspec

from eventfold.domain.events import Custom, WireTypes

# Profiles one request may hold (more: 413).
MAX_PROFILES_PER_REQUEST = 1_000


# A decoded body is a tree: untracked by the cyclic collector, as ``domain/events.py``'s.
class ProfileUpsert(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One person's changes as a client sends them (field names as on the wire).

    Unknown fields are refused, not kept: a misspelt ``addTags`` must not pass silently.
    """

    email: str | None = None
    phoneNumber: str | None = None
    profileId: str | None = None
    custom: Custom | None = None
    addTags: list[str] = []
    removeTags: list[str] = []
    timestamp: datetime | None = None


class ProfileUpserts(msgspec.Struct, omit_defaults=True, gc=False):
    """The request body. Unknown top-level fields are ignored, as for events."""

    profiles: list[ProfileUpsert]


class AcceptedUpsert(NamedTuple):
    """A validated, normalised upsert, ready to store: the shape of an ``AcceptedEvent``
    without an action (so that erasure reads its identifiers the same way).

    ``document`` is the upsert's JSON with normalised identifiers and a UTC timestamp.
    """

    occurred_at_ms: int
    email: str | None
    phone: str | None
    profile_ref: str | None
    document: bytes


UPSERT_FIELDS = frozenset(ProfileUpsert.__struct_fields__)


@dataclass(frozen=True, slots=True)
class UpsertTypes:
    """The upsert wire types with the configured limits built in."""

    request: type[ProfileUpserts]
    profile: type[ProfileUpsert]


def constrained_upsert_types(wire: WireTypes) -> UpsertTypes:
    """Subclasses of the upsert types whose names, ids and custom fields follow the same
    limits as events' (``events.constrained_types``)."""

    def subclass(base: type[Any], fields: list[Any]) -> Any:
        return msgspec.defstruct(base.__name__, fields, bases=(base,), module=__name__)

    names = GenericAlias(list, (wire.name,))
    profile = subclass(
        ProfileUpsert,
        [
            ("profileId", wire.identifier | None, None),
            ("custom", wire.custom | None, None),
            ("addTags", names, []),
            ("removeTags", names, []),
        ],
    )
    request = subclass(ProfileUpserts, [("profiles", GenericAlias(list, (profile,)))])
    return UpsertTypes(request=request, profile=profile)
