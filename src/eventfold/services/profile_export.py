"""``GET /api/v0/profiles/export``: every profile of an account as NDJSON, read a page
at a time by profile id so that the server holds one page, never the whole account."""

from __future__ import annotations

from datetime import datetime

import msgspec

from eventfold.domain.moments import to_epoch_ms
from eventfold.domain.profile import profile_view
from eventfold.domain.views import public_profile_id
from eventfold.errors import InvalidRequest
from eventfold.storage.base import Principal, ProfileStore

EXPORT_PAGE_SIZE = 500


class ExportPage(msgspec.Struct, frozen=True):
    """NDJSON lines, one profile each, and the id to continue after (None: the end)."""

    lines: bytes
    after_id: int | None


class ProfileExport:
    def __init__(self, store: ProfileStore, page_size: int = EXPORT_PAGE_SIZE) -> None:
        self._store = store
        self.page_size = page_size
        self._encoder = msgspec.json.Encoder()

    def page(self, principal: Principal, after_id: int, since_ms: int | None) -> ExportPage:
        """The profiles after ``after_id`` (by id) whose last event is at ``since_ms`` or
        later (all when None), as the lines of one page."""
        rows = self._store.profiles_after(principal.account_id, after_id, self.page_size)
        lines = bytearray()
        for row in rows:
            last_seen = row.state.last_seen
            if since_ms is not None and (last_seen is None or last_seen < since_ms):
                continue
            view = profile_view(public_profile_id(row.id), row.state)
            view.segments = row.segments
            self._encoder.encode_into(view, lines, len(lines))
            lines += b"\n"
        done = len(rows) < self.page_size
        return ExportPage(bytes(lines), None if done else rows[-1].id)


def parse_since(raw: str | None) -> int | None:
    """``since`` as epoch milliseconds (None when absent); InvalidRequest naming it."""
    if raw is None:
        return None
    try:
        return to_epoch_ms(msgspec.convert(raw, datetime))
    except msgspec.ValidationError:
        raise InvalidRequest(
            f"since: {raw[:80]!r} is not an ISO-8601 date-time like '2026-11-01T00:00:00Z' "
            "(profiles whose lastSeen is at or after it are exported)"
        ) from None
