"""Validating and normalising a request of profile upserts, as ``validation`` does for
events: every problem is reported with its path, and a request with any problem yields
nothing to store."""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Any

import msgspec

from eventfold.domain.events import WireTypes
from eventfold.domain.identity import EMAIL_RULE, PHONE_RULE, normalise_email, normalise_phone
from eventfold.domain.limits import Limits
from eventfold.domain.moments import OutOfRange, as_utc, from_epoch_ms, to_epoch_ms
from eventfold.domain.upserts import (
    MAX_PROFILES_PER_REQUEST,
    UPSERT_FIELDS,
    AcceptedUpsert,
    ProfileUpsert,
    constrained_upsert_types,
)
from eventfold.domain.validation import (
    DECODE_ERRORS,
    Problems,
    dates_to_utc,
    decode_generically,
    locate,
    shown,
)
from eventfold.errors import InvalidRequest, PayloadTooLarge

_FIELD_HINTS = {
    "email": "an email address string",
    "phoneNumber": "a phone number string like '+359888123456'",
    "profileId": "the shop's own id of the person, a string",
    "custom": 'an object like {"string": [{"key": "color", "values": ["red"]}]} with lists '
    '"string", "numeric" and "date" only',
    "addTags": "a list of non-empty strings",
    "removeTags": "a list of non-empty strings",
    "timestamp": "an ISO-8601 date-time like '2024-05-01T10:00:00Z' (no zone means UTC)",
}
_BODY_SHAPE = (
    'the body must be a JSON object with a "profiles" list: '
    '{"profiles": [{"email": "...", "custom": {...}, "addTags": [...]}]}'
)


class UpsertValidator:
    """Built once at start-up with the configured limits (those of events); thread-safe."""

    def __init__(self, limits: Limits, wire: WireTypes) -> None:
        self._limits = limits
        self.types = types = constrained_upsert_types(wire)
        self._profile_type = types.profile
        self._field_types: dict[str, Any] = typing.get_type_hints(
            types.profile, include_extras=True
        )
        self._decoder = msgspec.json.Decoder(types.request)
        self._generic_decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def validate(self, body: bytes, received_at_ms: int) -> list[AcceptedUpsert]:
        """The body's upserts, normalised; raises InvalidRequest listing every problem."""
        try:
            request = self._decoder.decode(body)
        except DECODE_ERRORS:
            return self._validate_generically(body, received_at_ms)
        self._check_count(len(request.profiles))
        problems = Problems(len(request.profiles))
        accepted = [
            self._normalise(upsert, index, received_at_ms, problems)
            for index, upsert in enumerate(request.profiles)
        ]
        problems.raise_if_any()
        return typing.cast(list[AcceptedUpsert], accepted)

    def _validate_generically(self, body: bytes, received_at_ms: int) -> list[AcceptedUpsert]:
        data = self._decode_generically(body)
        raw_profiles = data.get("profiles") if isinstance(data, dict) else None
        if not isinstance(raw_profiles, list):
            raise InvalidRequest(_BODY_SHAPE)
        self._check_count(len(raw_profiles))
        problems = Problems(len(raw_profiles))
        accepted: list[AcceptedUpsert] = []
        for index, raw in enumerate(raw_profiles):
            path = f"profiles[{index}]"
            if not isinstance(raw, dict):
                problems.add(
                    path, "must be an object with an 'email', 'phoneNumber' or 'profileId'"
                )
                continue
            upsert = self._convert_fields(raw, path, problems)
            normalised = None
            if upsert is not None:
                normalised = self._normalise(upsert, index, received_at_ms, problems)
            if normalised is not None:
                accepted.append(normalised)
        problems.raise_if_any()
        return accepted

    def _decode_generically(self, body: bytes) -> Any:
        return decode_generically(self._generic_decoder, body, _BODY_SHAPE, "a list of profiles")

    def _check_count(self, count: int) -> None:
        if count > MAX_PROFILES_PER_REQUEST:
            error = PayloadTooLarge(
                f"a request may hold at most {MAX_PROFILES_PER_REQUEST} profiles and this one "
                f"has {count}; split it into smaller requests"
            )
            error.event_count = count
            raise error

    def _convert_fields(
        self, raw: dict[str, Any], path: str, problems: Problems
    ) -> ProfileUpsert | None:
        """Converts each field on its own so that every wrong field is reported."""
        converted: dict[str, Any] = {}
        wrong = False
        for name, value in raw.items():
            if name not in UPSERT_FIELDS:
                problems.add(
                    f"{path}.{name}",
                    "unknown field; a profile takes email, phoneNumber, profileId, custom, "
                    "addTags, removeTags and timestamp",
                )
                wrong = True
                continue
            try:
                converted[name] = msgspec.convert(value, self._field_types[name])
            except msgspec.ValidationError as error:
                where, text = locate(f"{path}.{name}", error)
                problems.add(where, f"{text}; expected {_FIELD_HINTS.get(name, name)}")
                wrong = True
        if wrong:
            return None
        upsert: ProfileUpsert = self._profile_type(**converted)
        return upsert

    def _normalise(
        self, upsert: ProfileUpsert, index: int, received_at_ms: int, problems: Problems
    ) -> AcceptedUpsert | None:
        """Checks what the types cannot and rewrites the upsert into its stored form."""
        before = problems.count
        path = f"profiles[{index}]"
        email = phone = None
        if upsert.email is not None:
            email = normalise_email(upsert.email)
            if email is None:
                problems.add(f"{path}.email", f"{shown(upsert.email)} is not {EMAIL_RULE}")
            upsert.email = email
        if upsert.phoneNumber is not None:
            phone = normalise_phone(upsert.phoneNumber)
            if phone is None:
                problems.add(
                    f"{path}.phoneNumber", f"{shown(upsert.phoneNumber)} must be {PHONE_RULE}"
                )
            upsert.phoneNumber = phone
        if (
            upsert.email is None
            and upsert.phoneNumber is None
            and upsert.profileId is None
            and problems.count == before
        ):
            problems.add(
                path, "needs an 'email', a 'phoneNumber' or a 'profileId' to say whom it is about"
            )
        if upsert.custom is not None and upsert.custom.date:
            dates_to_utc(upsert.custom, f"{path}.custom.date", problems)
        occurred_at_ms = self._timestamp(upsert, path, received_at_ms, problems)
        if problems.count > before or occurred_at_ms is None:
            return None
        document = self._encoder.encode(upsert)
        return AcceptedUpsert(occurred_at_ms, email, phone, upsert.profileId, document)

    def _timestamp(
        self, upsert: ProfileUpsert, path: str, received_at_ms: int, problems: Problems
    ) -> int | None:
        """The upsert's time in epoch ms (the time received when it has none)."""
        timestamp = upsert.timestamp
        if timestamp is None:
            upsert.timestamp = from_epoch_ms(received_at_ms)
            return received_at_ms
        try:
            upsert.timestamp = timestamp = as_utc(timestamp)
        except OutOfRange as error:
            problems.add(f"{path}.timestamp", str(error))
            return None
        occurred_at_ms = to_epoch_ms(timestamp)
        if occurred_at_ms > received_at_ms + self._limits.max_future_seconds * 1000:
            problems.add(
                f"{path}.timestamp",
                f"{_iso(timestamp)} is more than {self._limits.max_future_seconds // 3600} "
                "hours in the future; send when the change was made (ISO-8601; no zone "
                "means UTC)",
            )
        return occurred_at_ms


def _iso(moment: datetime) -> str:
    return moment.isoformat()
