"""The bodies of webhook messages: ``{"type", "timestamp", "sequence", "data"}`` with the
profile and event as the read APIs return them. Encoded once, when the message is
queued, so every retry and replay sends the same bytes."""

from __future__ import annotations

from typing import Any

import msgspec

from eventfold.domain.moments import iso_from_ms
from eventfold.domain.profile import ProfileState, profile_view
from eventfold.domain.views import public_profile_id, stored_event_view

_encoder = msgspec.json.Encoder()


def profile_data(profile_id: int, profile: ProfileState) -> dict[str, Any]:
    """The profile as the read API shows it, as JSON-ready data (shared by a person's
    messages of one fold step)."""
    data: dict[str, Any] = msgspec.to_builtins(profile_view(public_profile_id(profile_id), profile))
    return data


def event_matched_data(
    event_document: bytes | str, received_at_ms: int, profile_id: int, profile: dict[str, Any]
) -> dict[str, Any]:
    """``event.matched``: the event and the profile it was folded into, as of that fold."""
    event = stored_event_view(event_document, received_at_ms, profile_id)
    return {"event": event, "profile": profile}


def segment_change_data(segment: str, profile: dict[str, Any]) -> dict[str, Any]:
    """``segment.entered`` / ``segment.exited``: the segment and the profile then."""
    return {"segment": segment, "profile": profile}


def message_body(kind: str, at_ms: int, sequence: int, data: dict[str, Any]) -> str:
    """The JSON body; ``sequence`` numbers the person's messages to the endpoint from 1."""
    body = {"type": kind, "timestamp": iso_from_ms(at_ms), "sequence": sequence, "data": data}
    return _encoder.encode(body).decode()
