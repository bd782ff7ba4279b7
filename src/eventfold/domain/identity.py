"""Normalising the identifiers of a person: email, phone number, profile id."""

from __future__ import annotations

import re

from eventfold.errors import InvalidRequest

_EMAIL = re.compile(r"[^@\s\x00]+@[^@\s.\x00]+(?:\.[^@\s.\x00]+)+")
_PHONE = re.compile(r"\+[0-9]{4,15}")
_PHONE_PUNCTUATION = str.maketrans("", "", " -()")
MAX_EMAIL_LENGTH = 254


def normalise_email(raw: str) -> str | None:
    """Trimmed and lower-cased, or None when it does not look like ``local@domain.tld``
    or is longer than MAX_EMAIL_LENGTH as sent (so that the OpenAPI document's maxLength
    says exactly the same)."""
    if len(raw) > MAX_EMAIL_LENGTH:
        return None
    email = raw.strip().lower()
    return email if _EMAIL.fullmatch(email) is not None else None


def normalise_phone(raw: str) -> str | None:
    """``+`` and 4 to 15 digits once spaces, dashes and parentheses are removed, or None."""
    phone = raw.translate(_PHONE_PUNCTUATION)
    return phone if _PHONE.fullmatch(phone) else None


EMAIL_RULE = "an email address like 'name@example.com'"
PHONE_RULE = (
    "'+' followed by 4 to 15 digits, e.g. '+359888123456' (spaces, dashes and parentheses "
    "are ignored)"
)


PERSON_KINDS = ("email", "phoneNumber", "profileId")


def parse_person(email: str | None, phone: str | None, profile_ref: str | None) -> tuple[str, str]:
    """The one identifier a read or erase request names, normalised as on ingest."""
    given = [
        (kind, value)
        for kind, value in zip(PERSON_KINDS, (email, phone, profile_ref), strict=True)
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidRequest(
            "name exactly one person with one query parameter: email, phoneNumber or profileId "
            f"(got {len(given)})"
        )
    kind, value = given[0]
    if kind == "email":
        normalised = normalise_email(value)
        if normalised is None:
            raise InvalidRequest(f"email: {value[:80]!r} is not {EMAIL_RULE}")
        return kind, normalised
    if kind == "phoneNumber":
        normalised = normalise_phone(value)
        if normalised is None:
            raise InvalidRequest(f"phoneNumber: {value[:80]!r} must be {PHONE_RULE}")
        return kind, normalised
    if not value:
        raise InvalidRequest("profileId: must not be empty")
    return kind, value
