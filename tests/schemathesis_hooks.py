"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key names one batch for 24 hours: the same key with another body is
answered 422, a rule of the server's state that no schema can state. Schemathesis draws
keys from a small pool, so each valid key it draws is made unique here; keys that break
the document's rules (empty, too long) are sent as drawn, to be rejected.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and 1 <= len(key) <= 255:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
