"""The webhooks API as use cases: endpoints of the key's account (create, read, change,
delete, rotate the secret), their deliveries, and replays. Every look-up is scoped to
the principal's account: another account's endpoint is a 404 like one that never was."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import socket
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
from msgspec import UNSET

from eventfold.clock import now_ms as current_ms
from eventfold.domain.moments import iso_from_ms, to_epoch_ms
from eventfold.domain.views import public_profile_id
from eventfold.domain.webhook_signing import generate_secret, generate_webhook_id
from eventfold.domain.webhook_wire import (
    AttemptView,
    DeliveryPage,
    DeliveryView,
    ReplayAnswer,
    ReplayRequest,
    WebhookCreate,
    WebhookList,
    WebhookPatch,
    WebhookView,
)
from eventfold.domain.webhooks import (
    Subscription,
    check_filter,
    check_status,
    check_types,
    check_url,
    is_public_address,
)
from eventfold.errors import FieldError, InvalidRequest, NotFound
from eventfold.storage.base import Principal
from eventfold.storage.webhook_records import DeliveryRecord, WebhookRecord, WebhookStore

# The old secret keeps signing beside the new one this long after a rotation.
ROTATION_OVERLAP_MS = 24 * 3600 * 1000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DELIVERY_STATES = ("pending", "delivered", "failed")
Resolver = Callable[[str, int], list[str]]
T = TypeVar("T")


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (IP literals resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refusal_of_target(host: str, addresses: list[str]) -> str | None:
    """Why a target is refused (it resolves to an address not on the public internet),
    or None."""
    private = [address for address in addresses if not is_public_address(address)]
    if not addresses:
        return f"{host} resolves to no address"
    if private:
        return (
            f"{host} resolves to {private[0]}, a private, loopback or link-local address; "
            "webhooks go to public addresses only (on-premises receivers: run the server "
            "with EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE=true)"
        )
    return None


class WebhookService:
    def __init__(
        self,
        store: WebhookStore,
        allow_private: bool,
        resolve: Resolver = resolve_host,
        clock: Callable[[], int] = current_ms,
    ) -> None:
        self._store = store
        self._allow_private = allow_private
        self._resolve = resolve
        self._clock = clock

    def create(self, principal: Principal, body: bytes) -> WebhookView:
        request = _decode(body, WebhookCreate)
        subscription = Subscription(
            check_types(request.types),
            check_filter("segments", request.segments),
            check_filter("actions", request.actions),
        )
        webhook = WebhookRecord(
            id=generate_webhook_id(),
            account_id=principal.account_id,
            url=self._check_target(request.url),
            subscription=subscription,
            status="enabled",
            secret=generate_secret(),
            created_at_ms=self._clock(),
        )
        self._store.create_webhook(webhook)
        return webhook_view(webhook, show_secret=True)

    def list(self, principal: Principal) -> WebhookList:
        return WebhookList(
            [webhook_view(w) for w in self._store.list_webhooks(principal.account_id)]
        )

    def get(self, principal: Principal, webhook_id: str) -> WebhookView:
        return webhook_view(self._find(principal, webhook_id))

    def update(self, principal: Principal, webhook_id: str, body: bytes) -> WebhookView:
        patch = _decode(body, WebhookPatch)
        webhook = self._find(principal, webhook_id)
        old = webhook.subscription
        subscription = Subscription(
            old.types if patch.types is UNSET else check_types(patch.types),
            old.segments if patch.segments is UNSET else check_filter("segments", patch.segments),
            old.actions if patch.actions is UNSET else check_filter("actions", patch.actions),
        )
        status = webhook.status if patch.status is UNSET else check_status(patch.status)
        changed = dataclasses.replace(
            webhook,
            url=webhook.url if patch.url is UNSET else self._check_target(patch.url),
            subscription=subscription,
            status=status,
            disabled_reason=webhook.disabled_reason if status == "disabled" else None,
        )
        self._save(changed)
        return webhook_view(changed)

    def delete(self, principal: Principal, webhook_id: str) -> None:
        if not self._store.delete_webhook(principal.account_id, webhook_id):
            raise _not_found(webhook_id)

    def rotate_secret(self, principal: Principal, webhook_id: str) -> WebhookView:
        webhook = self._find(principal, webhook_id)
        rotated = dataclasses.replace(
            webhook,
            secret=generate_secret(),
            previous_secret=webhook.secret,
            previous_secret_until_ms=self._clock() + ROTATION_OVERLAP_MS,
        )
        self._save(rotated)
        return webhook_view(rotated, show_secret=True)

    def deliveries(
        self,
        principal: Principal,
        webhook_id: str,
        cursor: str | None,
        status: str | None,
        limit: str | None,
    ) -> DeliveryPage:
        webhook = self._find(principal, webhook_id)
        if status is not None and status not in DELIVERY_STATES:
            raise InvalidRequest(
                f"status: {status[:20]!r} is not one of {', '.join(DELIVERY_STATES)}"
            )
        size = _page_size(limit)
        found = self._store.list_deliveries(webhook.id, status, _decode_cursor(cursor), size + 1)
        next_cursor = _encode_cursor(found[size - 1]) if len(found) > size else None
        return DeliveryPage([delivery_view(d) for d in found[:size]], next_cursor)

    def replay(self, principal: Principal, webhook_id: str, body: bytes) -> ReplayAnswer:
        request = _decode(body, ReplayRequest)
        webhook = self._find(principal, webhook_id)
        try:
            since = to_epoch_ms(msgspec.convert(request.since, datetime))
        except msgspec.ValidationError:
            detail = (
                f"{request.since[:40]!r} is not an ISO-8601 date-time like '2026-11-01T00:00:00Z'"
            )
            raise InvalidRequest(f"since: {detail}", [FieldError("since", detail)]) from None
        return ReplayAnswer(self._store.replay(webhook.id, since, self._clock()))

    def _find(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        webhook = self._store.find_webhook(principal.account_id, webhook_id)
        if webhook is None:
            raise _not_found(webhook_id)
        return webhook

    def _save(self, webhook: WebhookRecord) -> None:
        if not self._store.save_webhook(webhook):
            raise _not_found(webhook.id)  # deleted meanwhile

    def _check_target(self, url: str) -> str:
        """The URL, when it is well-formed and (unless private targets are allowed) its
        host resolves to public addresses only."""
        check_url(url)
        if self._allow_private:
            return url
        split = urlsplit(url)
        host = split.hostname or ""
        port = split.port or (443 if split.scheme == "https" else 80)
        try:
            addresses = self._resolve(host, port)
        except OSError:
            addresses = []
        refusal = refusal_of_target(host, addresses)
        if refusal is not None:
            raise InvalidRequest(f"url: {refusal}", [FieldError("url", refusal)])
        return url


def webhook_view(webhook: WebhookRecord, show_secret: bool = False) -> WebhookView:
    subscription = webhook.subscription
    until = webhook.previous_secret_until_ms
    return WebhookView(
        id=webhook.id,
        url=webhook.url,
        types=list(subscription.types),
        segments=None if subscription.segments is None else list(subscription.segments),
        actions=None if subscription.actions is None else list(subscription.actions),
        status=webhook.status,
        createdAt=iso_from_ms(webhook.created_at_ms),
        secret=webhook.secret if show_secret else UNSET,
        disabledReason=webhook.disabled_reason,
        previousSecretExpiresAt=iso_from_ms(until) if until is not None else None,
    )


def delivery_view(delivery: DeliveryRecord) -> DeliveryView:
    next_at = delivery.next_attempt_at_ms
    return DeliveryView(
        webhookId=delivery.id,
        type=delivery.type,
        status=delivery.state,
        profileId=public_profile_id(delivery.profile_id),
        personSequence=delivery.person_seq,
        createdAt=iso_from_ms(delivery.created_at_ms),
        nextAttemptAt=iso_from_ms(next_at) if next_at is not None else None,
        attempts=[
            AttemptView(iso_from_ms(a.at_ms), a.status_code, a.error, a.duration_ms)
            for a in delivery.attempts
        ],
    )


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"no webhook {webhook_id[:40]!r} in this account")


def _decode(body: bytes, kind: type[T]) -> T:
    """The body as ``kind``, or InvalidRequest naming the field and what it must be."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        text, _, where = str(error).partition(" - at `$")
        path = where.rstrip("`").lstrip(".")
        named = _NAMED_FIELD.search(text)  # a missing or unknown field is named in the text
        if named is not None:
            path = f"{path}.{named.group(1)}" if path else named.group(1)
        message = text[:1].lower() + text[1:]
        path = path or "$"
        raise InvalidRequest(f"{path}: {message}", [FieldError(path, message)]) from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"the body is not valid JSON ({error})") from None


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit: must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


_NAMED_FIELD = re.compile(r"field `([^`]+)`")
_CURSOR = re.compile(r"^d1:(\d{1,18}):(msg_[a-z2-7]{1,40})$")


def _encode_cursor(delivery: DeliveryRecord) -> str:
    text = f"d1:{delivery.created_at_ms}:{delivery.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    found = _CURSOR.match(text)
    if found is None:
        raise InvalidRequest(
            "cursor: not a cursor this server gave out; pass nextCursor as it came"
        )
    return int(found.group(1)), found.group(2)
