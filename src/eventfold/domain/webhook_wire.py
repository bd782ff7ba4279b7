"""The webhooks API's request and response bodies (msgspec Structs, also the source
of their OpenAPI schemas)."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    types: list[str]
    segments: list[str] | None = None  # narrows segment.* messages; null or absent: all
    actions: list[str] | None = None  # narrows event.matched messages; null or absent: all


class WebhookPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields given change; ``null`` filters mean all."""

    url: str | UnsetType = UNSET
    types: list[str] | UnsetType = UNSET
    segments: list[str] | UnsetType | None = UNSET
    actions: list[str] | UnsetType | None = UNSET
    status: str | UnsetType = UNSET


class WebhookView(msgspec.Struct, omit_defaults=True):
    id: str
    url: str
    types: list[str]
    segments: list[str] | None
    actions: list[str] | None
    status: str
    createdAt: str
    # Shown only when the endpoint is created and when its secret is rotated.
    secret: str | UnsetType = UNSET
    # Why the endpoint was disabled by eventfold (e.g. it answered 410 Gone).
    disabledReason: str | None = None
    # Until when the secret before the last rotation still signs beside the new one.
    previousSecretExpiresAt: str | None = None


class WebhookList(msgspec.Struct):
    webhooks: list[WebhookView]


class AttemptView(msgspec.Struct):
    at: str
    statusCode: int | None  # null: no answer (see error)
    error: str | None
    durationMs: int


class DeliveryView(msgspec.Struct):
    webhookId: str  # the message id, sent as the webhook-id header
    type: str
    status: str  # pending | delivered | failed
    profileId: str
    personSequence: int  # the person's messages to this endpoint, numbered from 1
    createdAt: str
    nextAttemptAt: str | None
    attempts: list[AttemptView]


class DeliveryPage(msgspec.Struct):
    deliveries: list[DeliveryView]
    nextCursor: str | None


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    since: str  # ISO 8601 date-time


class ReplayAnswer(msgspec.Struct):
    queued: int
