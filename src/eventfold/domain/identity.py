"""Normalising the identifiers of a person: email, phone number, profile id."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")
_PHONE = re.compile(r"\+[0-9]{4,15}")
_PHONE_PUNCTUATION = str.maketrans("", "", " -()")
MAX_EMAIL_LENGTH = 254


def normalise_email(raw: str) -> str | None:
    """Trimmed and lower-cased, or None when it does not look like ``local@domain.tld``."""
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or _EMAIL.fullmatch(email) is None:
        return None
    return email


def normalise_phone(raw: str) -> str | None:
    """``+`` and 4 to 15 digits once spaces, dashes and parentheses are removed, or None."""
    phone = raw.translate(_PHONE_PUNCTUATION)
    return phone if _PHONE.fullmatch(phone) else None


EMAIL_RULE = "an email address like 'name@example.com'"
PHONE_RULE = (
    "'+' followed by 4 to 15 digits, e.g. '+359888123456' (spaces, dashes and parentheses "
    "are ignored)"
)
