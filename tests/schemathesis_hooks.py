"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS), for
two rules of the server's state and clock that no schema can state, so that the checks
stay on for the operations they govern:

An Idempotency-Key names one batch for 24 hours: the same key with another body is
answered 422, a rule of the server's state that no schema can state. Schemathesis draws
keys from a small pool, so each valid key it draws is made unique here; keys that break
the document's rules (empty, too long) are sent as drawn, to be rejected.

An event's (or profile upsert's) timestamp may be at most 24 hours ahead of the server's
clock. A well-formed
timestamp that is later is moved to the same day and time of 2020, which keeps it
well-formed; malformed ones are sent as drawn.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import schemathesis

from eventfold.http.openapi_rules import DATE_TIME_PATTERN


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and 1 <= len(key) <= 255:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if case.method.upper() == "POST" and case.path in _TIMESTAMPED:
        _past_timestamps(case.body, _TIMESTAMPED[case.path])


_WELL_FORMED = re.compile(DATE_TIME_PATTERN)
_TIMESTAMPED = {"/api/v0/events": "events", "/api/v0/profiles": "profiles"}


def _past_timestamps(body: Any, items: str) -> None:
    events = body.get(items) if isinstance(body, dict) else None
    for event in events if isinstance(events, list) else ():
        stamp = event.get("timestamp") if isinstance(event, dict) else None
        if not isinstance(stamp, str) or not _WELL_FORMED.search(stamp):
            continue
        try:
            moment = msgspec.convert(stamp, datetime)
        except msgspec.ValidationError:
            continue  # for the server to reject
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment > datetime.now(UTC) - timedelta(days=2):
            event["timestamp"] = "2020" + stamp[4:]
