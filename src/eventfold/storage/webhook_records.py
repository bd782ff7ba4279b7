"""The webhooks' part of the storage contract (``WebhookStore``) and its records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventfold.domain.webhooks import Subscription


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """An endpoint: where messages go, which ones, and the secrets that sign them."""

    id: str
    account_id: int
    url: str
    subscription: Subscription
    status: str  # "enabled" | "disabled"
    secret: str
    created_at_ms: int
    # The secret before the last rotation, still signing beside the new one until then.
    previous_secret: str | None = None
    previous_secret_until_ms: int | None = None
    disabled_reason: str | None = None

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets that sign a message sent now (two during a rotation's overlap)."""
        until = self.previous_secret_until_ms
        if self.previous_secret is not None and until is not None and now_ms < until:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A message on its way into the outbox, where its person's sequence number is
    given and its body encoded."""

    id: str
    webhook_id: str
    profile_id: int
    type: str
    at_ms: int  # when what it tells happened (the body's timestamp)
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message claimed for an attempt."""

    id: str
    webhook_id: str
    profile_id: int
    person_seq: int
    body: str
    attempts: int  # made before this one, since it was queued (or replayed)
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    at_ms: int
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What an attempt changes: the message's new state and, on a 410, the endpoint's."""

    message_id: str
    attempt: AttemptRecord
    state: str  # "delivered" | "pending" | "failed"
    next_attempt_at_ms: int | None = None  # when pending
    disable_endpoint_because: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A message as ``GET /webhooks/{id}/deliveries`` lists it."""

    id: str
    type: str
    profile_id: int
    person_seq: int
    state: str
    created_at_ms: int
    next_attempt_at_ms: int | None
    attempts: Sequence[AttemptRecord]


@dataclass(frozen=True, slots=True)
class DeliveryBacklog:
    pending: int  # messages not delivered yet (due now or waiting for a retry)
    failed: int  # messages whose schedule ran out (listed for replay)
    lag_seconds: float  # how late the most overdue message is


class WebhookStore(Protocol):
    def create_webhook(self, webhook: WebhookRecord) -> None:
        """Stores a new endpoint."""

    def save_webhook(self, webhook: WebhookRecord) -> bool:
        """Replaces an endpoint's fields; False when the account has no such endpoint."""

    def delete_webhook(self, account_id: int, webhook_id: str) -> bool:
        """Deletes an endpoint and its messages; False when the account has none such."""

    def find_webhook(self, account_id: int, webhook_id: str) -> WebhookRecord | None:
        """The account's endpoint with this id."""

    def list_webhooks(self, account_id: int) -> list[WebhookRecord]:
        """The account's endpoints, oldest first."""

    def list_deliveries(
        self,
        webhook_id: str,
        state: str | None,
        before: tuple[int, str] | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        """The endpoint's messages, newest first, with their attempts; ``before`` is the
        (created at, id) of the last message of the page before."""

    def replay(self, webhook_id: str, since_ms: int, now_ms: int) -> int:
        """Queues again every message to the endpoint created since ``since_ms`` (same
        ids); returns how many."""

    def endpoints_due(self, now_ms: int) -> list[str]:
        """Enabled endpoints with a message due now that nobody holds."""

    def claim_messages(
        self,
        webhook_id: str,
        now_ms: int,
        limit: int,
        lease_ms: int,
        settle: Sequence[AttemptResult] = (),
    ) -> tuple[WebhookRecord | None, list[OutgoingMessage]]:
        """Records ``settle`` (attempts that ended, as ``record_attempts``), then holds
        up to ``limit`` due messages of an enabled endpoint for ``lease_ms`` (others skip
        them): per person only the oldest one not delivered. One transaction. Returns
        the endpoint too (None: deleted or disabled)."""

    def record_attempts(self, results: Sequence[AttemptResult]) -> None:
        """Stores attempts and what they changed, and releases the messages."""

    def delivery_backlog(self, now_ms: int) -> DeliveryBacklog:
        """Counts for /healthz and /metrics."""
