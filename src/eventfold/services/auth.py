"""Turning an ``Authorization`` header into the account it speaks for, cheaply and
without blocking the event loop.

Found keys are cached for ``cache_seconds`` (a revoked key stops working within that
time). Unknown keys are cached apart, in a bounded least-recently-used table, so that a
flood of bad keys neither reaches the database for each repeat nor evicts the valid
keys; a secret that cannot be an eventfold key (wrong prefix or length) never reaches
the database at all. Look-ups run on a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from eventfold.clock import now_ms
from eventfold.domain.keys import SECRET_PREFIX, hash_secret, is_well_formed_secret
from eventfold.errors import Unauthorized
from eventfold.storage.base import KeyStore, Principal

MAX_CACHED_KEYS = 10_000
MAX_CACHED_UNKNOWN_KEYS = 10_000
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
        self._known: dict[bytes, tuple[Principal, float]] = {}
        self._unknown: OrderedDict[bytes, float] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The key's principal; raises Unauthorized with a message that never echoes it."""
        secret = _secret_of(authorization)
        principal = await self._lookup(secret) if is_well_formed_secret(secret) else None
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

    async def _lookup(self, secret: str) -> Principal | None:
        secret_hash = hash_secret(secret)
        now = self._monotonic()
        known = self._known.get(secret_hash)
        if known is not None and known[1] > now:
            return known[0]
        unknown_until = self._unknown.get(secret_hash)
        if unknown_until is not None and unknown_until > now:
            self._unknown.move_to_end(secret_hash)
            return None
        principal = await asyncio.to_thread(self._keys.find_key, secret_hash)
        expires = self._monotonic() + self._cache_seconds
        if principal is None:
            self._known.pop(secret_hash, None)
            self._unknown[secret_hash] = expires
            self._unknown.move_to_end(secret_hash)
            while len(self._unknown) > MAX_CACHED_UNKNOWN_KEYS:
                self._unknown.popitem(last=False)
            return None
        self._unknown.pop(secret_hash, None)
        if len(self._known) >= MAX_CACHED_KEYS and secret_hash not in self._known:
            self._known.pop(next(iter(self._known)))  # the oldest entry
        self._known[secret_hash] = (principal, expires)
        self._keys.touch_key(principal.key_id, now_ms())
        return principal


def _secret_of(authorization: str | None) -> str:
    """The secret of a ``Bearer`` header; raises Unauthorized when there is none."""
    if not authorization:
        raise Unauthorized(f"no secret key was sent; {_HOW_TO}")
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise Unauthorized(f"the Authorization header is too long to hold a key; {_HOW_TO}")
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        raise Unauthorized(f"the Authorization header is malformed; {_HOW_TO}")
    return secret
