"""The idempotency-key table: claiming a key for a batch in the writer's transaction."""

from __future__ import annotations

from eventfold.domain.idempotency import is_repeat
from eventfold.storage.base import IdempotencyClaim
from eventfold.storage.sql import SqlConnection


def claim_key(
    connection: SqlConnection, account_id: int, now_ms: int, claim: IdempotencyClaim
) -> bool:
    """True if the batch is new; False if it repeats a batch stored under the same key.

    Runs in the writer's transaction. A repeat racing the first request waits behind it
    (SQLite's single writer; PostgreSQL's insert waits for the other transaction) and
    then sees its row.
    """
    inserted = connection.execute(
        "INSERT INTO idempotency_keys (account_id, key, body_hash, created_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (account_id, key) DO NOTHING",
        (account_id, claim.key, claim.body_hash, now_ms),
    ).rowcount
    if inserted == 1:
        return True
    renewed = connection.execute(  # an expired key is free again
        "UPDATE idempotency_keys SET body_hash = ?, created_at = ?"
        " WHERE account_id = ? AND key = ? AND created_at < ?",
        (claim.body_hash, now_ms, account_id, claim.key, claim.not_before_ms),
    ).rowcount
    if renewed == 1:
        return True
    row = connection.execute(
        "SELECT body_hash FROM idempotency_keys WHERE account_id = ? AND key = ?",
        (account_id, claim.key),
    ).fetchone()
    return not is_repeat(claim.key, claim.body_hash, bytes(row[0]))
