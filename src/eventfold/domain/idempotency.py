"""Whether a batch sent under an idempotency key repeats the one first sent under it."""

from __future__ import annotations

from eventfold.errors import IdempotencyConflict


def is_repeat(key: str, body_hash: bytes, stored_hash: bytes | None) -> bool:
    """True when a batch was stored under the key with the same body (store nothing, answer
    as if stored); False when none was; raises IdempotencyConflict for another body."""
    if stored_hash is None:
        return False
    if stored_hash == body_hash:
        return True
    raise IdempotencyConflict(
        f"the Idempotency-Key {key[:80]!r} was already used with a different body; "
        "use a new key for a new batch"
    )
