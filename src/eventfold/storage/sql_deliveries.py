"""``SqlWebhooks``: the ``WebhookStore`` contract in shared SQL: endpoints, and the
delivery side of the outbox (claims with a lease, attempts, listings, replays).

Several processes deliver at once: a claim holds a message with a lease
(``lease_until``) that others skip, taken on PostgreSQL with ``FOR UPDATE SKIP
LOCKED`` (on SQLite claims are writes, one at a time). A process killed mid-flight
leaves its lease to run out, and the message is attempted again (the same id), so a
crash may repeat a delivery but never loses one. Per endpoint and person, only the
oldest message not delivered (its ``head``) is ever claimed, so a person's messages
arrive in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_base import SqlBase
from eventfold.storage.sql_profiles import select_in
from eventfold.storage.sql_webhooks import (
    WEBHOOK_COLUMNS,
    person_lock,
    promote_next,
    webhook_from_row,
    webhook_row,
)
from eventfold.storage.webhook_records import (
    AttemptRecord,
    AttemptResult,
    DeliveryBacklog,
    DeliveryRecord,
    OutgoingMessage,
    WebhookRecord,
)

# Due heads nobody holds (``webhook_messages_claimable``).
_DUE = "m.state = 'pending' AND m.head AND m.next_attempt_at <= ? AND m.lease_until <= ?"


class SqlWebhooks(SqlBase):
    # --- endpoints ------------------------------------------------------------------

    def create_webhook(self, webhook: WebhookRecord) -> None:
        self._run_fold(
            lambda connection: connection.execute(
                f"INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                webhook_row(webhook),
            )
        )

    def save_webhook(self, webhook: WebhookRecord) -> bool:
        row = webhook_row(webhook)

        def save(connection: SqlConnection) -> int:
            cursor = connection.execute(
                "UPDATE webhooks SET url = ?, types = ?, segments = ?, actions = ?,"
                " status = ?, secret = ?, previous_secret = ?, previous_secret_until = ?,"
                " disabled_reason = ? WHERE id = ? AND account_id = ?",
                (*row[2:8], *row[9:12], webhook.id, webhook.account_id),
            )
            return int(cursor.rowcount)

        return bool(self._run_fold(save))

    def delete_webhook(self, account_id: int, webhook_id: str) -> bool:
        def delete(connection: SqlConnection) -> int:
            found = connection.execute(
                "DELETE FROM webhooks WHERE id = ? AND account_id = ?", (webhook_id, account_id)
            ).rowcount
            if found:
                connection.execute(
                    "DELETE FROM webhook_attempts WHERE message_id IN"
                    " (SELECT id FROM webhook_messages WHERE webhook_id = ?)",
                    (webhook_id,),
                )
                for table in ("webhook_messages", "webhook_people"):
                    connection.execute(f"DELETE FROM {table} WHERE webhook_id = ?", (webhook_id,))
            return int(found)

        return bool(self._run_fold(delete))

    def find_webhook(self, account_id: int, webhook_id: str) -> WebhookRecord | None:
        with self._reading() as connection:
            row = connection.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND account_id = ?",
                (webhook_id, account_id),
            ).fetchone()
        return webhook_from_row(row) if row is not None else None

    def list_webhooks(self, account_id: int) -> list[WebhookRecord]:
        with self._reading() as connection:
            rows = connection.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_id = ?"
                " ORDER BY created_at, id",
                (account_id,),
            ).fetchall()
        return [webhook_from_row(row) for row in rows]

    # --- deliveries -----------------------------------------------------------------

    def list_deliveries(
        self,
        webhook_id: str,
        state: str | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        conditions, parameters = ["webhook_id = ?"], list[object]([webhook_id])
        if state is not None:
            conditions.append("state = ?")
            parameters.append(state)
        if before is not None:
            conditions.append("(created_at < ? OR (created_at = ? AND id < ?))")
            parameters += [before[0], before[0], before[1]]
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT id, type, profile_id, person_seq, state, created_at, next_attempt_at"
                f" FROM webhook_messages WHERE {' AND '.join(conditions)}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (*parameters, limit),
            ).fetchall()
            attempts: dict[str, list[AttemptRecord]] = {}
            for message, at, status, error, duration in select_in(
                connection,
                "SELECT message_id, attempted_at, status_code, error, duration_ms"
                " FROM webhook_attempts WHERE message_id IN ({}) ORDER BY attempted_at",
                (),
                [row[0] for row in rows],
            ):
                attempts.setdefault(message, []).append(AttemptRecord(at, status, error, duration))
        return [
            DeliveryRecord(
                id=row[0],
                type=row[1],
                profile_id=row[2],
                person_seq=row[3],
                state=row[4],
                created_at_ms=row[5],
                next_attempt_at_ms=row[6] if row[4] == "pending" else None,
                attempts=attempts.get(row[0], []),
            )
            for row in rows
        ]

    def replay(self, webhook_id: str, since_ms: int, now_ms: int) -> int:
        def replay(connection: SqlConnection) -> int:
            connection.execute(
                "SELECT profile_id FROM webhook_people WHERE webhook_id = ? ORDER BY profile_id"
                + person_lock(connection),
                (webhook_id,),
            ).fetchall()
            cursor = connection.execute(
                "UPDATE webhook_messages SET state = 'pending', attempts = 0,"
                " next_attempt_at = ?, lease_until = 0"
                " WHERE webhook_id = ? AND created_at >= ? AND state <> 'pending'",
                (now_ms, webhook_id, since_ms),
            )
            # Each person's oldest pending message is their head again.
            connection.execute(
                "UPDATE webhook_messages SET head = (person_seq = (SELECT min(e.person_seq)"
                " FROM webhook_messages e WHERE e.webhook_id = webhook_messages.webhook_id"
                " AND e.profile_id = webhook_messages.profile_id AND e.state = 'pending'))"
                " WHERE webhook_id = ? AND state = 'pending'",
                (webhook_id,),
            )
            return int(cursor.rowcount)

        replayed: int = self._run_fold(replay)
        return replayed

    def endpoints_due(self, now_ms: int) -> list[str]:
        with self._reading() as connection:
            # Per endpoint, one look into its index of heads (not a scan of everything due).
            rows = connection.execute(
                "SELECT w.id FROM webhooks w WHERE w.status = 'enabled' AND EXISTS"
                f" (SELECT 1 FROM webhook_messages m WHERE m.webhook_id = w.id AND {_DUE})",
                (now_ms, now_ms),
            ).fetchall()
        return sorted(row[0] for row in rows)

    def claim_messages(
        self,
        webhook_id: str,
        now_ms: int,
        limit: int,
        lease_ms: int,
        settle: Sequence[AttemptResult] = (),
    ) -> tuple[WebhookRecord | None, list[OutgoingMessage]]:
        suffix = self._fold_locking.claim_suffix

        def claim(connection: SqlConnection) -> tuple[WebhookRecord | None, list[OutgoingMessage]]:
            for result in sorted(settle, key=lambda result: result.message_id):
                _record(connection, result)
            row = connection.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND status = 'enabled'",
                (webhook_id,),
            ).fetchone()
            if row is None:
                return None, []
            rows = connection.execute(
                "SELECT m.id, m.webhook_id, m.profile_id, m.person_seq, m.body, m.attempts,"
                f" m.created_at FROM webhook_messages m WHERE m.webhook_id = ? AND {_DUE}"
                " ORDER BY m.next_attempt_at LIMIT ?" + suffix,
                (webhook_id, now_ms, now_ms, limit),
            ).fetchall()
            select_in(
                connection,
                "UPDATE webhook_messages SET lease_until = ? WHERE id IN ({}) RETURNING id",
                (now_ms + lease_ms,),
                [r[0] for r in rows],
            )
            return webhook_from_row(row), [OutgoingMessage(*r) for r in rows]

        claimed: tuple[WebhookRecord | None, list[OutgoingMessage]] = self._run_fold(
            claim, rows=max(1, len(settle))
        )
        return claimed

    def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        def record(connection: SqlConnection) -> None:
            for result in sorted(results, key=lambda result: result.message_id):
                _record(connection, result)

        if results:
            self._run_fold(record, rows=len(results))

    def delivery_backlog(self, now_ms: int) -> DeliveryBacklog:
        with self._reading() as connection:
            counts: dict[str, int] = dict(
                connection.execute(
                    "SELECT state, count(*) FROM webhook_messages"
                    " WHERE state IN ('pending', 'failed') GROUP BY state"
                ).fetchall()
            )
            row: Any = connection.execute(
                "SELECT min(m.next_attempt_at) FROM webhook_messages m"
                " JOIN webhooks w ON w.id = m.webhook_id AND w.status = 'enabled'"
                " WHERE m.state = 'pending' AND m.head AND m.next_attempt_at <= ?",
                (now_ms,),
            ).fetchone()
        oldest = row[0] if row is not None else None
        lag = max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0
        return DeliveryBacklog(counts.get("pending", 0), counts.get("failed", 0), lag)


def _record(connection: SqlConnection, result: AttemptResult) -> None:
    """One attempt and what it changed; a message deleted meanwhile (its endpoint or
    person) is left alone."""
    found = connection.execute(
        "SELECT webhook_id, profile_id FROM webhook_messages WHERE id = ?", (result.message_id,)
    ).fetchone()
    if found is None:
        return
    webhook_id, profile_id = found
    finished = result.state != "pending"
    if finished:  # the person's next message becomes the head: under the person's lock
        connection.execute(
            "SELECT last_seq FROM webhook_people WHERE webhook_id = ? AND profile_id = ?"
            + person_lock(connection),
            (webhook_id, profile_id),
        ).fetchall()
    attempt = result.attempt
    connection.execute(
        "INSERT INTO webhook_attempts (message_id, attempted_at, status_code, error,"
        " duration_ms) VALUES (?, ?, ?, ?, ?)",
        (result.message_id, attempt.at_ms, attempt.status_code, attempt.error, attempt.duration_ms),
    )
    connection.execute(
        "UPDATE webhook_messages SET state = ?, attempts = attempts + 1,"
        " next_attempt_at = coalesce(?, next_attempt_at), lease_until = 0, delivered_at = ?,"
        " head = ? WHERE id = ?",
        (
            result.state,
            result.next_attempt_at_ms,
            attempt.at_ms if result.state == "delivered" else None,
            not finished,
            result.message_id,
        ),
    )
    if finished:
        promote_next(connection, webhook_id, profile_id)
    if result.disable_endpoint_because is not None:
        connection.execute(
            "UPDATE webhooks SET status = 'disabled', disabled_reason = ? WHERE id = ?",
            (result.disable_endpoint_because, webhook_id),
        )
