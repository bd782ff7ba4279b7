"""Signing as the Standard Webhooks specification says: secrets ``whsec_`` + base64 of
random bytes, ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
several space-separated while a rotated secret still signs; and message ids derived from
what happened, so a retry or a replay carries the same id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
WEBHOOK_ID_PREFIX = "wh_"
MESSAGE_ID_PREFIX = "msg_"
_SECRET_BYTES = 32  # the specification asks for 24 to 64


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def generate_webhook_id() -> str:
    return WEBHOOK_ID_PREFIX + secrets.token_hex(12)


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 signature>`` of one message with one secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(signature(secret, message_id, timestamp, body) for secret in secrets_in_use)


def message_id(webhook_id: str, *what_happened: object) -> str:
    """A stable id for the message of ``what_happened`` (e.g. ``"event", seq``) to an
    endpoint: the same on every retry and replay, different for every endpoint."""
    text = "|".join([webhook_id, *(str(part) for part in what_happened)])
    digest = hashlib.sha256(text.encode()).digest()[:15]
    return MESSAGE_ID_PREFIX + base64.b32encode(digest).decode().lower()
