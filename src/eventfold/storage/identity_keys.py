"""How an identifier's value is kept in an index: as it is when short, by its digest
when long.

A profile id may be 4,096 characters, and PostgreSQL's B-tree refuses an entry over
about 2,700 bytes: one such event stopped the fold for every account. Every indexed
identifier column (``identities``, ``erasures``) stores ``indexed_value(value)``, and
every look-up asks for the same.
"""

from __future__ import annotations

import hashlib

# Values longer than this (in UTF-8 bytes) are indexed by their digest.
MAX_INDEXED_BYTES = 1_024
DIGEST_PREFIX = "#sha256:"


def indexed_value(value: str) -> str:
    """``value`` itself, or ``#sha256:`` and its hex SHA-256 when it is long. A digest
    is short, so applying this twice gives the same as once."""
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_INDEXED_BYTES:
        return value
    return DIGEST_PREFIX + hashlib.sha256(encoded).hexdigest()


# The same rewrite in each database's SQL, for the migration of existing rows.
SQLITE_REWRITE = (
    "UPDATE {table} SET value = eventfold_indexed_value(value)"
    f" WHERE length(CAST(value AS BLOB)) > {MAX_INDEXED_BYTES}"
)
POSTGRES_REWRITE = (
    f"UPDATE {{table}} SET value = '{DIGEST_PREFIX}' || encode(sha256(convert_to(value, 'UTF8')),"
    f" 'hex') WHERE octet_length(value) > {MAX_INDEXED_BYTES}"
)
