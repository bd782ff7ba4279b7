"""Secret keys: generated with 256 bits of entropy, recognisable, stored only as a hash."""

from __future__ import annotations

import hashlib
import re
import secrets

SECRET_PREFIX = "efsk_"  # noqa: S105 - a prefix, not a secret
KEY_ID_PREFIX = "key_"
# The prefix, then 32 bytes in URL-safe base64 without padding: 43 characters.
_SECRET_SHAPE = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{43}")


def generate_secret() -> str:
    """A new secret key: the prefix and 32 random bytes, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def is_well_formed_secret(secret: str) -> bool:
    """Whether ``secret`` has the shape of a key ``generate_secret`` makes; others are
    refused without a look-up."""
    return _SECRET_SHAPE.fullmatch(secret) is not None


def generate_key_id() -> str:
    """The public id of a key, safe to print and log."""
    return KEY_ID_PREFIX + secrets.token_hex(8)


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret. Secrets are random, so a fast hash cannot be brute-forced,
    and looking up the hash (not the secret) leaks nothing through timing."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
