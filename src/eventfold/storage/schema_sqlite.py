"""SQLite's schema: its migration steps, in order (applied by ``migrations``)."""

from __future__ import annotations

from eventfold.storage.identity_keys import SQLITE_REWRITE
from eventfold.storage.schema_steps import (
    BATCHES_COLUMNS,
    FOLD_PROGRESS,
    IDEMPOTENCY_KEYS_BY_AGE,
    LOGGED_BATCHES,
    MERGED_PROFILES,
    QUARANTINE_RECORDS,
    SEGMENTS,
    SQLITE_CHANGE_QUEUE,
    WEBHOOKS,
    Step,
    long_identifiers_by_digest,
    unfolded_events_into_the_log,
)

SQLITE_MIGRATIONS: tuple[Step, ...] = (
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
    # 4: the queue of unfolded events, so the fold never scans the events table for them.
    (
        "CREATE TABLE unfolded (seq INTEGER PRIMARY KEY)",
        "INSERT INTO unfolded (seq) SELECT seq FROM events WHERE profile_id IS NULL",
        """CREATE TRIGGER events_to_fold AFTER INSERT ON events
           BEGIN INSERT INTO unfolded (seq) VALUES (NEW.seq); END""",
    ),
    # 5: see LOGGED_BATCHES.
    LOGGED_BATCHES,
    # 6: the append job queues its events itself (``SqliteStorage._insert_events``): a
    # row trigger inside the group commit's savepoints cut inserts from about 140k to 50k
    # rows/s (measured: 100-event batches, 20 a transaction).
    "DROP TRIGGER events_to_fold",
    # 7: see IDEMPOTENCY_KEYS_BY_AGE.
    IDEMPOTENCY_KEYS_BY_AGE,
    # 8: see QUARANTINE and storage/identity_keys.py.
    long_identifiers_by_digest(SQLITE_REWRITE),
    # 9: see MERGED_PROFILES.
    MERGED_PROFILES,
    # 10: see BATCHES_COLUMNS. AUTOINCREMENT keeps the highest position ever given in
    # sqlite_sequence; appends take the next one SEQ_STRIDE above it.
    (
        "CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        + BATCHES_COLUMNS.format(blob="BLOB")
        + ")",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'batches', coalesce((SELECT seq FROM"
        " sqlite_sequence WHERE name = 'events'), 0)",
        *(statement.format(blob="BLOB", empty="x''") for statement in QUARANTINE_RECORDS),
        unfolded_events_into_the_log,
        "DROP TABLE unfolded",
    ),
    # 11: see SEGMENTS.
    SEGMENTS.format(serial="INTEGER PRIMARY KEY", bytes="BLOB"),
    # 12: see WEBHOOKS.
    WEBHOOKS,
    # 13: see FOLD_PROGRESS.
    FOLD_PROGRESS,
    # 14: see SQLITE_CHANGE_QUEUE.
    SQLITE_CHANGE_QUEUE,
)
