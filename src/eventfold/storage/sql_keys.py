"""Secret keys and accounts in SQL (``KeyStore``)."""

from __future__ import annotations

from eventfold.domain.keys import generate_key_id, generate_secret, hash_secret
from eventfold.storage.base import KeyRecord, Principal
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import SqlBase


class SqlKeys(SqlBase):
    def create_key(
        self, account_name: str, now_ms: int, rate_limit: float | None = None
    ) -> tuple[KeyRecord, str]:
        secret, key_id = generate_secret(), generate_key_id()

        def insert(connection: SqlConnection) -> None:
            connection.execute(
                "INSERT INTO accounts (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (account_name, now_ms),
            )
            connection.execute(
                "INSERT INTO api_keys (id, account_id, secret_hash, created_at, rate_limit)"
                " SELECT ?, id, ?, ?, ? FROM accounts WHERE name = ?",
                (key_id, hash_secret(secret), now_ms, rate_limit, account_name),
            )

        self._writer.run(insert)
        return KeyRecord(key_id, account_name, now_ms, None, None, rate_limit), secret

    def set_rate_limit(self, key_id: str, rate_limit: float | None) -> bool:
        return self._changed(
            "UPDATE api_keys SET rate_limit = ? WHERE id = ?", (rate_limit, key_id)
        )

    def list_keys(self) -> list[KeyRecord]:
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT k.id, a.name, k.created_at, k.last_used_at, k.revoked_at, k.rate_limit"
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                " ORDER BY k.created_at, k.id"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        return self._changed(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
            (now_ms, key_id),
        )

    def find_key(self, secret_hash: bytes) -> Principal | None:
        with self._reading() as connection:
            row = connection.execute(
                "SELECT k.id, a.id, a.name, k.rate_limit"
                " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                " WHERE k.secret_hash = ? AND k.revoked_at IS NULL",
                (secret_hash,),
            ).fetchone()
        return Principal(*row) if row else None

    def touch_key(self, key_id: str, now_ms: int) -> None:
        # Fire and forget: a missed "last used" time must never fail a request.
        self._writer.enqueue_quietly(
            lambda connection: connection.execute(
                "UPDATE api_keys SET last_used_at = ?"
                " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                (now_ms, key_id, now_ms),
            )
        )

    def has_keys(self) -> bool:
        with self._reading() as connection:
            return connection.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None
