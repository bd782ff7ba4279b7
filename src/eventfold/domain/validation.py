"""Validating and normalising a batch: every problem is reported, and a batch with any
problem yields nothing to store.

Most batches take the fast path: one msgspec decode straight into Structs. A batch that
fails it (a wrong type, or fields the API does not know) is read again generically so
that every problem can be listed with its path and unknown fields can be kept.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from eventfold.domain.events import (
    EVENT_FIELDS,
    PRODUCT_FIELDS,
    AcceptedEvent,
    Batch,
    Custom,
    DateField,
    Event,
    NumericField,
    StringField,
)
from eventfold.domain.identity import EMAIL_RULE, PHONE_RULE, normalise_email, normalise_phone
from eventfold.domain.limits import Limits
from eventfold.errors import FieldError, InvalidRequest, PayloadTooLarge

MAX_REPORTED_ERRORS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_EVENT_TYPES: dict[str, Any] = typing.get_type_hints(Event, include_extras=True)
_BODY_SHAPE = 'the body must be a JSON object with an "events" list: {"events": [{...}]}'
_DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)


class BatchValidator:
    """Built once at start-up with the configured limits; thread-safe."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._batch_decoder = msgspec.json.Decoder(Batch)
        self._generic_decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def validate(self, body: bytes, received_at_ms: int) -> list[AcceptedEvent]:
        """The body's events, normalised; raises InvalidRequest listing every problem."""
        try:
            batch = self._batch_decoder.decode(body)
        except _DECODE_ERRORS:
            return self._validate_generically(body, received_at_ms)
        self._check_count(len(batch.events))
        problems = _Problems()
        accepted = [
            self._normalise(event, f"events[{index}]", received_at_ms, problems)
            for index, event in enumerate(batch.events)
        ]
        problems.raise_if_any()
        return typing.cast(list[AcceptedEvent], accepted)

    def _validate_generically(self, body: bytes, received_at_ms: int) -> list[AcceptedEvent]:
        data = self._decode_generically(body)
        raw_events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(raw_events, list):
            raise InvalidRequest(_BODY_SHAPE)
        self._check_count(len(raw_events))
        problems = _Problems()
        accepted: list[AcceptedEvent] = []
        for index, raw in enumerate(raw_events):
            path = f"events[{index}]"
            if not isinstance(raw, dict):
                problems.add(
                    path, "must be an object with an 'action' and an 'email' or 'phoneNumber'"
                )
                continue
            known, extras, product_extras = _split_unknown_fields(raw)
            event = _convert_fields(known, path, problems)
            if event is None:
                continue
            normalised = self._normalise(event, path, received_at_ms, problems, extras)
            if normalised is None:
                continue
            if extras or any(product_extras):
                document = msgspec.to_builtins(event)
                document.update(extras)
                for product, more in zip(
                    document.get("products", ()), product_extras, strict=False
                ):
                    product.update(more)
                normalised = normalised._replace(document=self._encoder.encode(document))
            accepted.append(normalised)
        problems.raise_if_any()
        return accepted

    def _decode_generically(self, body: bytes) -> Any:
        try:
            return self._generic_decoder.decode(body)
        except msgspec.DecodeError as error:
            raise InvalidRequest(f"the body is not valid JSON ({error}); {_BODY_SHAPE}") from None
        except UnicodeDecodeError as error:
            raise InvalidRequest(
                f"the body is not valid UTF-8 (bad byte at offset {error.start}); "
                "send JSON encoded as UTF-8"
            ) from None
        except RecursionError:
            raise InvalidRequest("the body is nested too deeply to be an event batch") from None

    def _check_count(self, count: int) -> None:
        limit = self._limits.max_events_per_batch
        if count > limit:
            raise PayloadTooLarge(
                f"a batch may hold at most {limit} events and this one has {count}; "
                "split it into smaller batches"
            )

    def _normalise(
        self,
        event: Event,
        path: str,
        received_at_ms: int,
        problems: _Problems,
        extras: dict[str, Any] | None = None,
    ) -> AcceptedEvent | None:
        """Checks one event and rewrites it in place into its stored form."""
        limits = self._limits
        before = problems.count
        if not event.action or len(event.action) > limits.max_name_length:
            problems.add(
                f"{path}.action",
                f"must be 1 to {limits.max_name_length} characters: "
                "the name of what happened, e.g. 'purchase'",
            )
        email = phone = None
        if event.email is not None:
            email = normalise_email(event.email)
            if email is None:
                problems.add(f"{path}.email", f"{_shown(event.email)} is not {EMAIL_RULE}")
            event.email = email
        if event.phoneNumber is not None:
            phone = normalise_phone(event.phoneNumber)
            if phone is None:
                problems.add(
                    f"{path}.phoneNumber", f"{_shown(event.phoneNumber)} must be {PHONE_RULE}"
                )
            event.phoneNumber = phone
        if event.email is None and event.phoneNumber is None and problems.count == before:
            problems.add(
                path,
                "needs an 'email' or a 'phoneNumber' to say whom it is about"
                + _hint_for_identifiers(extras),
            )
        if event.profileId is not None and not 0 < len(event.profileId) <= limits.max_string_length:
            problems.add(f"{path}.profileId", f"must be 1 to {limits.max_string_length} characters")
        if event.locale is not None:
            if len(event.locale) == 2 and event.locale.isascii() and event.locale.isalpha():
                event.locale = event.locale.lower()
            else:
                problems.add(
                    f"{path}.locale",
                    f"{_shown(event.locale)} is not a two-letter "
                    "ISO 639-1 language code such as 'en' or 'bg'",
                )
        for index, product in enumerate(event.products):
            product_path = f"{path}.products[{index}]"
            if isinstance(product.id, int):
                product.id = str(product.id)
            if not 0 < len(product.id) <= limits.max_string_length:
                problems.add(
                    f"{product_path}.id", f"must be 1 to {limits.max_string_length} characters"
                )
            if product.custom is not None:
                self._check_custom(product.custom, f"{product_path}.custom", problems)
        if event.custom is not None:
            self._check_custom(event.custom, f"{path}.custom", problems)
        for index, tag in enumerate(event.tags):
            if not 0 < len(tag) <= limits.max_name_length:
                problems.add(
                    f"{path}.tags[{index}]", f"must be 1 to {limits.max_name_length} characters"
                )
        if event.timestamp is None:
            occurred_at_ms = received_at_ms
            event.timestamp = _EPOCH + received_at_ms * _MILLISECOND
        else:
            event.timestamp = _as_utc(event.timestamp)
            occurred_at_ms = (event.timestamp - _EPOCH) // _MILLISECOND
            if occurred_at_ms > received_at_ms + limits.max_future_seconds * 1000:
                problems.add(
                    f"{path}.timestamp",
                    f"{event.timestamp.isoformat()} is more than "
                    f"{limits.max_future_seconds // 3600} hours in the future; send "
                    "when the event happened (ISO-8601; no zone means UTC)",
                )
        if problems.count > before:
            return None
        return AcceptedEvent(
            occurred_at_ms, event.action, email, phone, event.profileId, self._encoder.encode(event)
        )

    def _check_custom(self, custom: Custom, path: str, problems: _Problems) -> None:
        max_name, max_string = self._limits.max_name_length, self._limits.max_string_length
        typed_lists: tuple[tuple[str, Sequence[StringField | NumericField | DateField]], ...] = (
            ("string", custom.string),
            ("numeric", custom.numeric),
            ("date", custom.date),
        )
        for kind, fields in typed_lists:
            for index, field in enumerate(fields):
                if not 0 < len(field.key) <= max_name:
                    problems.add(
                        f"{path}.{kind}[{index}].key", f"must be 1 to {max_name} characters"
                    )
        for index, string_field in enumerate(custom.string):
            for value_index, value in enumerate(string_field.values):
                if len(value) > max_string:
                    problems.add(
                        f"{path}.string[{index}].values[{value_index}]",
                        f"is longer than {max_string} characters",
                    )
        for date_field in custom.date:
            date_field.values = [_as_utc(value) for value in date_field.values]


class _Problems:
    """Collects field errors; keeps the first MAX_REPORTED_ERRORS and counts the rest."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.count = 0

    def add(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(FieldError(path, message))

    def raise_if_any(self) -> None:
        if not self.count:
            return
        first = self.errors[0]
        more = ""
        if self.count > 1:
            more = f" (and {self.count - 1} more problems, listed in 'errors')"
        raise InvalidRequest(
            f"{first.path}: {first.message}{more}; nothing was stored", self.errors
        )


def _split_unknown_fields(
    raw: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The event's known fields, its unknown ones, and each product's unknown ones."""
    known = {key: value for key, value in raw.items() if key in EVENT_FIELDS}
    extras = {key: value for key, value in raw.items() if key not in EVENT_FIELDS}
    product_extras: list[dict[str, Any]] = []
    products = known.get("products")
    if isinstance(products, list):
        product_extras = [
            {k: v for k, v in p.items() if k not in PRODUCT_FIELDS} if isinstance(p, dict) else {}
            for p in products
        ]
        known["products"] = [
            {k: v for k, v in p.items() if k in PRODUCT_FIELDS} if isinstance(p, dict) else p
            for p in products
        ]
    return known, extras, product_extras


def _convert_fields(known: dict[str, Any], path: str, problems: _Problems) -> Event | None:
    """Converts each field on its own so that every wrong type is reported, not the first."""
    converted: dict[str, Any] = {}
    if "action" not in known:
        problems.add(f"{path}.action", "is required: the name of what happened, e.g. 'purchase'")
    for name, value in known.items():
        try:
            converted[name] = msgspec.convert(value, _EVENT_TYPES[name])
        except msgspec.ValidationError as error:
            problems.add(*_locate(f"{path}.{name}", error))
    if len(converted) < len(known) or "action" not in known:
        return None
    return Event(**converted)


def _locate(path: str, error: msgspec.ValidationError) -> tuple[str, str]:
    """Turns msgspec's "Expected `str`, got `int` - at `$[0].id`" into our path and text."""
    text, _, where = str(error).partition(" - at `$")
    return path + where.rstrip("`"), text[:1].lower() + text[1:]


def _hint_for_identifiers(extras: dict[str, Any] | None) -> str:
    lookalikes = [key for key in extras or () if "mail" in key.lower() or "phone" in key.lower()]
    if not lookalikes:
        return ""
    return f" (it has {', '.join(map(repr, lookalikes))}: field names are case-sensitive)"


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _shown(value: str) -> str:
    """A value quoted for an error message, cut short so a huge value stays readable."""
    return repr(value if len(value) <= 80 else value[:77] + "...")
