"""Stored events and profile ids as the read APIs (and webhook messages) show them."""

from __future__ import annotations

from typing import Any

import msgspec

from eventfold.domain.moments import iso_from_ms

PROFILE_ID_PREFIX = "prof_"
_document = msgspec.json.Decoder(dict[str, Any])


def public_profile_id(profile_id: int) -> str:
    return f"{PROFILE_ID_PREFIX}{profile_id}"


def stored_event_view(
    document: bytes | str, received_at_ms: int, profile_id: int | None
) -> dict[str, Any]:
    """An event as the API returns it: its fields, when it arrived, its profile."""
    view = _document.decode(document)
    view["receivedAt"] = iso_from_ms(received_at_ms)
    view["foldedIntoProfile"] = public_profile_id(profile_id) if profile_id is not None else None
    return view
