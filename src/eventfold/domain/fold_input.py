"""What the fold reads of an event or a profile upsert: the parts of a stored document
it decodes (``FoldInput``, ``FoldUpsert``), or the validated event itself where the fold
runs in the process that accepted it (both are a ``FoldSource``), and the identifiers
that name its person."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec


# Decoded documents are trees (no reference cycles): untracked by the cyclic collector,
# as ``domain/profile.py`` explains.
class FoldProduct(msgspec.Struct, gc=False):
    id: str


class FoldCustomField(msgspec.Struct, gc=False):
    key: str
    values: list[Any]


class FoldCustom(msgspec.Struct, gc=False):
    string: list[FoldCustomField] = []
    numeric: list[FoldCustomField] = []
    date: list[FoldCustomField] = []


class FoldInput(msgspec.Struct, gc=False):
    """The parts of a stored event document that the fold reads (others are ignored)."""

    action: str
    email: str | None = None
    phoneNumber: str | None = None
    profileId: str | None = None
    locale: str | None = None
    products: list[FoldProduct] = []
    custom: FoldCustom | None = None
    tags: list[str] = []


class _CustomFieldSource(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def values(self) -> list[Any]: ...


class CustomSource(Protocol):
    @property
    def string(self) -> Sequence[_CustomFieldSource]: ...
    @property
    def numeric(self) -> Sequence[_CustomFieldSource]: ...
    @property
    def date(self) -> Sequence[_CustomFieldSource]: ...


class _ProductSource(Protocol):
    @property
    def id(self) -> str | int: ...


class FoldSource(Protocol):
    """What the fold reads of an event: a ``FoldInput`` decoded from its stored document,
    or, where the fold runs in the process that accepted it, the validated event itself
    (``domain.events.Event`` after normalisation; ``storage/decoded_batches.py``)."""

    @property
    def action(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phoneNumber(self) -> str | None: ...
    @property
    def profileId(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def products(self) -> Sequence[_ProductSource]: ...
    @property
    def custom(self) -> CustomSource | None: ...
    @property
    def tags(self) -> Sequence[str]: ...


class FoldUpsert(msgspec.Struct, gc=False):
    """The parts of a stored profile upsert that the fold reads."""

    email: str | None = None
    phoneNumber: str | None = None
    profileId: str | None = None
    custom: FoldCustom | None = None
    addTags: list[str] = []
    removeTags: list[str] = []


FoldItem = FoldSource | FoldUpsert  # what the fold folds: an event or a profile upsert
Identifier = tuple[str, str]  # (kind, normalised value): ("email", "a@b.co")


def identifiers_of(event: FoldItem) -> list[Identifier]:
    """The identifiers an event or upsert names, in a fixed order."""
    found: list[Identifier] = []
    if event.email is not None:
        found.append(("email", event.email))
    if event.phoneNumber is not None:
        found.append(("phoneNumber", event.phoneNumber))
    if event.profileId is not None:
        found.append(("profileId", event.profileId))
    return found
