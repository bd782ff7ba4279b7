"""Versioned schema migrations: a list of steps, applied in order, recorded in a table.

A database whose schema is newer than this code knows is refused, so an old binary never
writes into a schema it does not understand.
"""

from __future__ import annotations

import sqlite3

from eventfold.errors import ConfigurationError

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # 1: keys, accounts and the event log.
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        secret_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    -- AUTOINCREMENT: a position is never reused, even after the newest event is erased.
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        received_at INTEGER NOT NULL,
        occurred_at INTEGER NOT NULL,
        action TEXT NOT NULL,
        email TEXT,
        phone TEXT,
        profile_ref TEXT,
        body BLOB NOT NULL,
        profile_id INTEGER
    );
    CREATE INDEX events_by_account ON events(account_id, seq);
    """,
    # 2: profiles, identifiers and the fold's progress.
    """
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        state BLOB NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE identities (
        account_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        profile_id INTEGER NOT NULL,
        PRIMARY KEY (account_id, kind, value)
    ) WITHOUT ROWID;
    CREATE INDEX identities_by_profile ON identities(profile_id);
    CREATE TABLE fold_state (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE INDEX events_by_profile ON events(profile_id, seq);
    """,
    # 3: idempotent retries and per-key rate limits.
    """
    CREATE TABLE idempotency_keys (
        account_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        body_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, key)
    ) WITHOUT ROWID;
    ALTER TABLE api_keys ADD COLUMN rate_limit REAL
    """,
)


def migrate_sqlite(connection: sqlite3.Connection) -> int:
    """Brings the schema up to date; returns the version it is at."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    known = len(SQLITE_MIGRATIONS)
    if current > known:
        raise ConfigurationError(
            f"the database's schema is version {current}, newer than this eventfold knows "
            f"({known}); upgrade eventfold before using this database"
        )
    for version in range(current + 1, known + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in SQLITE_MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return known
