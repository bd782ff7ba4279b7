"""Turning an ``Authorization`` header into the account it speaks for, cheaply.

Lookups are cached for ``cache_seconds`` (unknown keys too, so a flood of bad keys does
not reach the database); a revoked key therefore stops working within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eventfold.clock import now_ms
from eventfold.domain.keys import SECRET_PREFIX, hash_secret
from eventfold.errors import Unauthorized
from eventfold.storage.base import KeyStore, Principal

MAX_CACHED_KEYS = 10_000
MAX_AUTHORIZATION_LENGTH = 1_024
_HOW_TO = "send the header 'Authorization: Bearer <secretKey>'"


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        cache_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}

    def authenticate(self, authorization: str | None) -> Principal:
        """The key's principal; raises Unauthorized with a message that never echoes it."""
        if not authorization:
            raise Unauthorized(f"no secret key was sent; {_HOW_TO}")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise Unauthorized(f"the Authorization header is too long to hold a key; {_HOW_TO}")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret or " " in secret:
            raise Unauthorized(f"the Authorization header is malformed; {_HOW_TO}")
        principal = self._lookup(hash_secret(secret))
        if principal is None:
            hint = (
                ""
                if secret.startswith(SECRET_PREFIX)
                else (f" (eventfold keys start with '{SECRET_PREFIX}')")
            )
            raise Unauthorized(
                f"the secret key is unknown or revoked{hint}; create one with "
                "'eventfold keys create --account NAME'"
            )
        return principal

    def _lookup(self, secret_hash: bytes) -> Principal | None:
        now = self._monotonic()
        cached = self._cache.get(secret_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = self._keys.find_key(secret_hash)
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()
        self._cache[secret_hash] = (principal, now + self._cache_seconds)
        if principal is not None:
            self._keys.touch_key(principal.key_id, now_ms())
        return principal
