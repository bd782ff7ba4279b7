"""What both clients share: building and checking events and profile upserts, encoding
batches, and when and how long to wait before retrying."""

from __future__ import annotations

import gzip
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.upsert_validation import UpsertValidator
from eventfold.domain.validation import BatchValidator
from eventfold.errors import FieldError, InvalidRequest, PayloadTooLarge

logger = logging.getLogger("eventfold.client")

Event = dict[str, Any]
ErrorCallback = Callable[[Sequence[Event], Exception], None]
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_encoder = msgspec.json.Encoder()
# The same rules as the server, from the same code.
_validator = BatchValidator(Limits())
_upsert_validator = UpsertValidator(Limits(), _validator.types)
EVENTS_PATH = "/api/v0/events"
PROFILES_PATH = "/api/v0/profiles"


class InvalidEvent(ValueError):
    """``track`` was given an event the server would reject; ``errors`` says where."""

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        super().__init__(message)
        self.errors = errors


class InvalidProfile(ValueError):
    """``upsert_profile`` was given changes the server would reject; ``errors`` says
    where (paths start at ``profiles[0]``)."""

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        super().__init__(message)
        self.errors = errors


class ClientError(Exception):
    """The server refused a batch for good (a 4xx other than 408 and 429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class QueueFull(Exception):
    """The client's buffer was full and the event was dropped (``on_full="drop"``)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 10
    base_seconds: float = 0.2
    cap_seconds: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never shorter than ``Retry-After``."""
        backoff = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))  # noqa: S311
        return max(backoff, retry_after or 0.0)


def build_event(
    action: str,
    email: str | None,
    phone_number: str | None,
    profile_id: str | None,
    products: Sequence[dict[str, Any]] | None,
    custom: dict[str, Any] | None,
    tags: Sequence[str] | None,
    locale: str | None,
    timestamp: datetime | str | None,
    extra: dict[str, Any],
) -> Event:
    """An event in the wire format, checked with the server's own rules.

    Without a timestamp the event is stamped now, so that buffering and retries never
    move it in time. Raises InvalidEvent at once for an event the server would reject.
    """
    if timestamp is None:
        timestamp = datetime.now(UTC)
    event: Event = {
        "action": action,
        "email": email,
        "phoneNumber": phone_number,
        "profileId": profile_id,
        "products": list(products) if products is not None else None,
        "custom": custom,
        "tags": list(tags) if tags is not None else None,
        "locale": locale,
        "timestamp": timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp,
        **extra,
    }
    event = {key: value for key, value in event.items() if value is not None}
    check_events([event])
    return event


def check_events(events: Sequence[Event]) -> None:
    """Raises InvalidEvent if the server would reject these events."""
    try:
        _validator.validate(_encoder.encode({"events": events}), now_ms())
    except (InvalidRequest, PayloadTooLarge) as error:
        errors = getattr(error, "errors", [])
        raise InvalidEvent(error.message, errors) from None
    except msgspec.EncodeError as error:
        raise InvalidEvent(f"the event cannot be sent as JSON: {error}", []) from None


def build_upsert(
    email: str | None,
    phone_number: str | None,
    profile_id: str | None,
    custom: dict[str, Any] | None,
    add_tags: Sequence[str] | None,
    remove_tags: Sequence[str] | None,
    timestamp: datetime | str | None,
) -> bytes:
    """The gzip-compressed body of ``POST /api/v0/profiles`` for one person, checked
    with the server's own rules (InvalidProfile at once otherwise). Without a timestamp
    the changes are stamped now, so that retries never make them later."""
    if timestamp is None:
        timestamp = datetime.now(UTC)
    profile = {
        "email": email,
        "phoneNumber": phone_number,
        "profileId": profile_id,
        "custom": custom,
        "addTags": list(add_tags) if add_tags is not None else None,
        "removeTags": list(remove_tags) if remove_tags is not None else None,
        "timestamp": timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp,
    }
    try:
        body = _encoder.encode({"profiles": [{k: v for k, v in profile.items() if v is not None}]})
        _upsert_validator.validate(body, now_ms())
    except InvalidRequest as error:
        raise InvalidProfile(error.message, error.errors) from None
    except msgspec.EncodeError as error:
        raise InvalidProfile(f"the changes cannot be sent as JSON: {error}", []) from None
    return gzip.compress(body, compresslevel=1)


def encode_batch(events: Sequence[Event]) -> bytes:
    """The gzip-compressed request body."""
    return gzip.compress(_encoder.encode({"events": events}), compresslevel=1)


def encoded_size(event: Event) -> int:
    return len(_encoder.encode(event)) + 1


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def headers(secret_key: str, idempotency_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {secret_key}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Idempotency-Key": idempotency_key,
    }


EXPORT_PATH = "/api/v0/profiles/export"


def export_request(secret_key: str, since: datetime | str | None) -> dict[str, Any]:
    """The query and headers of ``GET /api/v0/profiles/export``; a datetime without a
    zone is UTC, as the server reads it."""
    params = {}
    if since is not None:
        params["since"] = since.isoformat() if isinstance(since, datetime) else since
    return {"params": params, "headers": {"Authorization": f"Bearer {secret_key}"}}


def export_refusal(status: int, body: bytes) -> ClientError:
    return ClientError(status, error_message(body))


def decode_profile(line: str) -> dict[str, Any]:
    profile: dict[str, Any] = msgspec.json.decode(line)
    return profile


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (its seconds form)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_message(body: bytes) -> str:
    try:
        message = msgspec.json.decode(body).get("message")
    except (msgspec.DecodeError, AttributeError):
        message = None
    return str(message) if message else body[:200].decode("utf-8", "replace")


def log_error(events: Sequence[Event], error: Exception) -> None:
    """The default ``on_error``: a warning with how many events were not delivered."""
    logger.warning("eventfold: %d event(s) not delivered: %s", len(events), error)


class ClientOptions:
    """What both clients are configured with, and how they report failures."""

    def __init__(
        self,
        secret_key: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_batch_bytes: int = 4 * 1024 * 1024,
        on_full: Literal["block", "drop"] = "block",
        on_error: ErrorCallback = log_error,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._secret_key = secret_key
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_batch_bytes = max_batch_bytes
        self._on_full = on_full
        self._on_error = on_error
        self._retry = retry or RetryPolicy()

    def _batch_is_full(self, events: int, size: int) -> bool:
        return events >= self._batch_size or size >= self._max_batch_bytes

    def _report(self, events: Sequence[Event], error: Exception) -> None:
        try:
            self._on_error(events, error)
        except Exception:
            log_error(events, error)


def judge(
    status: int, retry_after_header: str | None, body: bytes
) -> tuple[bool, Exception | None, float | None]:
    """What an answer means for a batch: (retry it?, the failure if any, seconds to wait
    at least)."""
    if status < 300:
        return False, None, None
    failure = ClientError(status, error_message(body))
    if status in RETRY_STATUSES:
        return True, failure, retry_after(retry_after_header)
    return False, failure, None
