"""The wire format of ``POST /api/v0/events``, as msgspec Structs.

The same types decode requests, encode stored events and describe the API. What the
contract fixes (types, required fields, ``quantity >= 0``) is declared on the classes;
configurable limits are added by ``constrained_types`` at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import GenericAlias
from typing import Annotated, Any, NamedTuple

import msgspec

from eventfold.domain.languages import ISO_639_1_PATTERN
from eventfold.domain.limits import Limits

# Structs forbid unknown fields so that the fast path notices when an event carries
# extra fields; the slower path in ``validation`` then keeps them. A decoded body is a
# tree (no reference cycles), so they are not tracked by the cyclic collector
# (``gc=False``, as ``domain/profile.py`` explains).


class StringField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    key: str
    values: list[str]


class NumericField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    key: str
    values: list[float]


class DateField(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    key: str
    values: list[datetime]


class Custom(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Custom fields: three typed lists; missing and empty lists are the same."""

    string: list[StringField] = []
    numeric: list[NumericField] = []
    date: list[DateField] = []


# Integer product ids must fit in 64 bits; larger ones are to be sent as strings.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Product(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    id: str | Int64
    custom: Custom | None = None
    quantity: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
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


class Batch(msgspec.Struct, omit_defaults=True, gc=False):
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


@dataclass(frozen=True, slots=True)
class WireTypes:
    """The wire types with the configured limits built in (see ``constrained_types``)."""

    batch: type[Batch]
    event: type[Event]
    product: type[Product]
    custom: type[Custom]
    name: Any  # a non-empty name (custom field keys, tags)
    identifier: Any  # a non-empty id (profileId)


def constrained_types(limits: Limits, forbid_nul: bool = True) -> WireTypes:
    """Subclasses of the wire types whose lengths and patterns follow ``limits``, so that
    msgspec checks them in C while decoding instead of Python checking them afterwards.

    Names and ids are indexed columns too, and PostgreSQL's text cannot hold U+0000, so
    they must not hold it; ``forbid_nul=False`` leaves that pattern out, for bodies known
    to hold no NUL (see ``BatchValidator``).
    """
    # \Z, not $: "$" also matches before a trailing newline ("en\n" passed).
    no_nul = "^[^\x00]*\\Z" if forbid_nul else None
    name = Annotated[
        str, msgspec.Meta(min_length=1, max_length=limits.max_name_length, pattern=no_nul)
    ]
    text = Annotated[str, msgspec.Meta(max_length=limits.max_string_length)]
    identifier = Annotated[
        str, msgspec.Meta(min_length=1, max_length=limits.max_string_length, pattern=no_nul)
    ]

    def list_of(item: Any) -> Any:
        return GenericAlias(list, (item,))  # list[item], for a class made at run time

    def subclass(base: type[Any], fields: list[Any]) -> Any:
        return msgspec.defstruct(base.__name__, fields, bases=(base,), module=__name__)

    string_field = subclass(StringField, [("key", name), ("values", list[text])])
    numeric_field = subclass(NumericField, [("key", name)])
    date_field = subclass(DateField, [("key", name)])
    custom = subclass(
        Custom,
        [
            ("string", list_of(string_field), []),
            ("numeric", list_of(numeric_field), []),
            ("date", list_of(date_field), []),
        ],
    )
    # Checked against ISO 639-1 in ``validation``; the pattern only tells the document.
    locale = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": ISO_639_1_PATTERN})]
    product = subclass(Product, [("id", identifier | Int64), ("custom", custom | None, None)])
    event = subclass(
        Event,
        [
            ("action", name),
            ("profileId", identifier | None, None),
            ("locale", locale | None, None),
            ("products", list_of(product), []),
            ("custom", custom | None, None),
            ("tags", list[name], []),
        ],
    )
    batch = subclass(Batch, [("events", list_of(event))])
    return WireTypes(
        batch=batch, event=event, product=product, custom=custom, name=name, identifier=identifier
    )
