"""The wire format of ``POST /api/v0/events``, as msgspec Structs.

The same types decode requests, encode stored events and describe the API in OpenAPI.
Limits that are configurable (string lengths, counts) are checked in ``validation``;
what is fixed by the contract (types, required fields, ``quantity >= 0``) is here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, NamedTuple

import msgspec

# Structs forbid unknown fields so that the fast path notices when an event carries
# extra fields; the slower path in ``validation`` then keeps them.


class StringField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    key: str
    values: list[str]


class NumericField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    key: str
    values: list[float]


class DateField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    key: str
    values: list[datetime]


class Custom(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Custom fields: three typed lists; missing and empty lists are the same."""

    string: list[StringField] = []
    numeric: list[NumericField] = []
    date: list[DateField] = []


class Product(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: str | int
    custom: Custom | None = None
    quantity: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One custom event as a client sends it (field names as on the wire)."""

    action: str
    email: str | None = None
    phoneNumber: str | None = None
    profileId: str | None = None
    locale: str | None = None
    products: list[Product] = []
    custom: Custom | None = None
    tags: list[str] = []
    timestamp: datetime | None = None


class Batch(msgspec.Struct, omit_defaults=True):
    """The request body. Unknown top-level fields are ignored."""

    events: list[Event]


class AcceptedEvent(NamedTuple):
    """A validated, normalised event, ready to store.

    ``document`` is the event's JSON as it will be read back: normalised identifiers,
    a UTC timestamp, and every field the client sent, known or not.
    """

    occurred_at_ms: int
    action: str
    email: str | None
    phone: str | None
    profile_ref: str | None
    document: bytes


EVENT_FIELDS = frozenset(Event.__struct_fields__)
PRODUCT_FIELDS = frozenset(Product.__struct_fields__)
