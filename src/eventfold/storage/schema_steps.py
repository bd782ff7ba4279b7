"""The schema's steps that SQLite and PostgreSQL share, or write alike (each backend's
list of steps, ``schema_sqlite`` and ``schema_postgres``, names them in order), and
what a step is. ``migrations`` applies them.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.storage.batch_records import encode_events
from eventfold.storage.sql import SqlConnection

# A step is a script of ";"-separated statements, or a tuple of statements (for bodies
# that hold semicolons themselves: triggers, functions) and functions that change the
# data on the step's connection (``?`` placeholders).
Statement = str | Callable[[SqlConnection], None]
Step = str | tuple[Statement, ...]

# Batches applied from an external log (JetStream), and erasures that must reach batches
# still in it: the same on both backends.
LOGGED_BATCHES = """
    CREATE TABLE applied_log_positions (position BIGINT PRIMARY KEY);
    CREATE TABLE erasures (
        account_id BIGINT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        up_to_position BIGINT NOT NULL,
        PRIMARY KEY (account_id, kind, value)
    )
"""

# The clean-up of expired idempotency keys (every minute) finds them by age instead of
# scanning the whole table on the writer.
IDEMPOTENCY_KEYS_BY_AGE = "CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_at)"

# Events that failed to fold for a reason that did not go away, set aside with the error
# so the fold goes on with everything else (``eventfold fold quarantine``).
QUARANTINE = """
    CREATE TABLE quarantined_events (
        seq BIGINT PRIMARY KEY,
        account_id BIGINT NOT NULL,
        error TEXT NOT NULL,
        quarantined_at BIGINT NOT NULL
    )
"""

# Profile ids that were merged into another profile, so that GET /api/v0/profiles/{id}
# can name the survivor (kept until the survivor is erased).
MERGED_PROFILES = """
    CREATE TABLE merged_profiles (
        id BIGINT PRIMARY KEY,
        account_id BIGINT NOT NULL,
        merged_into BIGINT NOT NULL
    )
"""

# Webhooks (docs/webhooks.md): endpoints, the outbox of messages written in the same
# transaction as the change that caused them, each person's message count per endpoint,
# and every attempt. The same on both backends. ``head`` marks the one message of each
# endpoint and person that may be attempted (the oldest not delivered): claims read an
# index of heads instead of checking each due message for an older one (that check made
# a claim take 120 ms with 500 messages due on PostgreSQL).
# How many events each fold loop has folded, ever (a row per process and thread, so
# parallel folds never wait for one another's counter): their sum measures the fold's
# rate for backpressure, whichever API node accepted the events.
FOLD_PROGRESS = "CREATE TABLE fold_progress (folder TEXT PRIMARY KEY, folded BIGINT NOT NULL)"

WEBHOOKS = """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        url TEXT NOT NULL,
        types TEXT NOT NULL,
        segments TEXT,
        actions TEXT,
        status TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        previous_secret TEXT,
        previous_secret_until BIGINT,
        disabled_reason TEXT
    );
    CREATE INDEX webhooks_by_account ON webhooks(account_id, status);
    CREATE TABLE webhook_messages (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        profile_id BIGINT NOT NULL,
        person_seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_until BIGINT NOT NULL DEFAULT 0,
        delivered_at BIGINT,
        head BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX webhook_messages_claimable ON webhook_messages(webhook_id, next_attempt_at)
        WHERE state = 'pending' AND head;
    CREATE INDEX webhook_messages_by_person ON webhook_messages(webhook_id, profile_id, person_seq)
        WHERE state = 'pending';
    CREATE INDEX webhook_messages_by_endpoint ON webhook_messages(webhook_id, created_at);
    CREATE TABLE webhook_people (
        webhook_id TEXT NOT NULL,
        profile_id BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        PRIMARY KEY (webhook_id, profile_id)
    );
    CREATE TABLE webhook_attempts (
        message_id TEXT NOT NULL,
        attempted_at BIGINT NOT NULL,
        status_code INTEGER,
        error TEXT,
        duration_ms INTEGER NOT NULL
    );
    CREATE INDEX webhook_attempts_by_message ON webhook_attempts(message_id, attempted_at)
"""


# The log of accepted batches: the request path appends one row per batch, and the fold
# makes the events' rows and the profiles from it (storage/batch_records.py). Quarantined
# events keep their record, as batches of one event. Replaces the queue of unfolded
# events, whose events move into the log.
BATCHES_COLUMNS = """
        account_id BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        event_count INTEGER NOT NULL,
        body {blob} NOT NULL
"""
QUARANTINE_RECORDS = (
    "ALTER TABLE quarantined_events ADD COLUMN received_at BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE quarantined_events ADD COLUMN event_count INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE quarantined_events ADD COLUMN body {blob} NOT NULL DEFAULT {empty}",
)


def unfolded_events_into_the_log(connection: SqlConnection) -> None:
    """Each event the fold had not taken yet becomes a batch of its own at its position,
    and each quarantined one keeps its record in the quarantine; their rows leave the
    events table (the fold writes them again)."""
    columns = (
        "e.seq, e.account_id, e.received_at, e.occurred_at, e.action, e.email,"
        " e.phone, e.profile_ref, e.body"
    )
    for source in ("unfolded", "quarantined_events"):
        rows = connection.execute(
            f"SELECT {columns} FROM events e JOIN {source} q ON q.seq = e.seq ORDER BY e.seq"
        ).fetchall()
        for seq, account, received, occurred, action, email, phone, ref, body in rows:
            record = encode_events(
                [AcceptedEvent(occurred, action, email, phone, ref, bytes(body))]
            )
            if source == "unfolded":
                connection.execute(
                    "INSERT INTO batches (seq, account_id, received_at, event_count, body)"
                    " VALUES (?, ?, ?, 1, ?)",
                    (seq, account, received, record),
                )
            else:
                connection.execute(
                    "UPDATE quarantined_events SET received_at = ?, body = ? WHERE seq = ?",
                    (received, record, seq),
                )
            connection.execute("DELETE FROM events WHERE seq = ?", (seq,))


# Segments (docs/segments.md): definitions, each person's event-leaf states and next
# change moment (the timer's index), members, and the change feed, whose positions are
# given in commit order once committed (the counter lives in fold_state).
SEGMENTS = """
    CREATE TABLE segments (
        id {serial},
        account_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        definition {bytes} NOT NULL,
        version BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        backfill_after BIGINT NOT NULL,
        UNIQUE (account_id, key)
    );
    CREATE TABLE segment_people (
        profile_id BIGINT PRIMARY KEY,
        account_id BIGINT NOT NULL,
        leaves {bytes} NOT NULL,
        next_change_at BIGINT
    );
    CREATE INDEX segment_people_due ON segment_people(next_change_at)
        WHERE next_change_at IS NOT NULL;
    CREATE TABLE segment_members (
        segment_id BIGINT NOT NULL,
        profile_id BIGINT NOT NULL,
        since BIGINT NOT NULL,
        PRIMARY KEY (segment_id, profile_id)
    );
    CREATE INDEX segment_members_by_profile ON segment_members(profile_id);
    CREATE TABLE segment_changes (
        seq {serial},
        account_id BIGINT NOT NULL,
        segment_id BIGINT NOT NULL,
        profile_id BIGINT NOT NULL,
        change TEXT NOT NULL,
        at BIGINT NOT NULL,
        version BIGINT NOT NULL,
        feed_position BIGINT
    );
    CREATE INDEX segment_changes_unsequenced ON segment_changes(seq)
        WHERE feed_position IS NULL;
    CREATE INDEX segment_changes_feed ON segment_changes(segment_id, feed_position);
    CREATE INDEX segment_changes_by_age ON segment_changes(at);
    CREATE INDEX segment_changes_by_account ON segment_changes(account_id, feed_position);
    INSERT INTO fold_state (name, value) VALUES ('segment_feed_position', 0)
"""


# Membership changes wait in a queue with no index until the feed numbers them
# (``sql_segment_feed.sequence_changes`` moves them into segment_changes with their
# position), a row per person and fold step with their changes as MessagePack
# ``[[segment_id, change, version], ...]``: a fold step with 50 segments made about 6
# changes per event, and inserting each into segment_changes and its four indexes, then
# updating three of them again when numbered, was a fifth of the fold's segment cost on
# SQLite. The queue's numbers go on from segment_changes' (webhook messages are named by
# them); changes not numbered yet move into the queue.
_CHANGE_QUEUE_TABLE = """
    CREATE TABLE segment_change_queue (
        seq {serial},
        account_id BIGINT NOT NULL,
        profile_id BIGINT NOT NULL,
        at BIGINT NOT NULL,
        changes {bytes} NOT NULL
    )
"""
_HIGHEST_CHANGE = (
    "SELECT coalesce(max(seq), 0) FROM (SELECT max(seq) AS seq FROM segment_changes"
    " UNION ALL SELECT max(seq) FROM segment_change_queue) AS numbers"
)


def _unnumbered_changes_into_the_queue(connection: SqlConnection) -> None:
    rows = connection.execute(
        "SELECT seq, account_id, segment_id, profile_id, change, at, version"
        " FROM segment_changes WHERE feed_position IS NULL ORDER BY seq"
    ).fetchall()
    for seq, account, segment, profile, change, at, version in rows:
        connection.execute(
            "INSERT INTO segment_change_queue (seq, account_id, profile_id, at, changes)"
            " VALUES (?, ?, ?, ?, ?)",
            (seq, account, profile, at, msgspec.msgpack.encode([[segment, change, version]])),
        )
    connection.execute("DELETE FROM segment_changes WHERE feed_position IS NULL")
    connection.execute("DROP INDEX segment_changes_unsequenced")


SQLITE_CHANGE_QUEUE = (
    _CHANGE_QUEUE_TABLE.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", bytes="BLOB"),
    _unnumbered_changes_into_the_queue,
    "DELETE FROM sqlite_sequence WHERE name = 'segment_change_queue'",
    f"INSERT INTO sqlite_sequence (name, seq) SELECT 'segment_change_queue', ({_HIGHEST_CHANGE})",
)
POSTGRES_CHANGE_QUEUE = (
    _CHANGE_QUEUE_TABLE.format(
        serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", bytes="BYTEA"
    ),
    _unnumbered_changes_into_the_queue,
    "SELECT setval(pg_get_serial_sequence('segment_change_queue', 'seq'),"
    f" ({_HIGHEST_CHANGE}) + 1, false)",
    # The feed's rows now take their number from it, not from the queue.
    "SELECT setval(pg_get_serial_sequence('segment_changes', 'seq'),"
    " (SELECT coalesce(max(seq), 0) + 1 FROM segment_changes), false)",
)


def long_identifiers_by_digest(rewrite: str) -> Step:
    return (
        QUARANTINE,
        rewrite.format(table="identities"),
        rewrite.format(table="erasures"),
    )
