"""Moving a database to another backend (SQLite to PostgreSQL, typically) as it is:
every table: accounts, keys, events with their positions, the log of batches not folded
yet, the quarantine, profiles, identifiers, idempotency keys, segments and webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager

from eventfold.errors import ConfigurationError
from eventfold.settings import Settings, parse_database_url
from eventfold.storage import open_storage
from eventfold.storage.sql import SqlConnection

# Every table, in an order that satisfies the foreign keys; each is copied with every
# column the source has (read from the source, so a new column is never left behind).
TABLES = (
    "accounts",
    "api_keys",
    "events",
    "profiles",
    "identities",
    "fold_state",
    "quarantined_events",
    "merged_profiles",
    "idempotency_keys",
    "batches",
    "segments",
    "segment_people",
    "segment_members",
    "segment_changes",
    "segment_change_queue",
    "webhooks",
    "webhook_messages",
    "webhook_people",
    "webhook_attempts",
)
# Rows the target's own migrations made, which the source's replace.
_REPLACED = {"fold_state": " ON CONFLICT (name) DO UPDATE SET value = excluded.value"}
# Columns numbered by the database (PostgreSQL): set past the copied rows afterwards.
_NUMBERED = (("accounts", "id"), ("events", "seq"), ("segments", "id"), ("segment_changes", "seq"))
# The highest position a batch or event of the source holds: the target's next batch
# goes above it.
_HIGHEST_POSITION = (
    "SELECT max(seq) FROM (SELECT max(seq) AS seq FROM events UNION ALL SELECT max(seq)"
    " FROM batches UNION ALL SELECT max(seq) FROM quarantined_events) AS positions"
)
# A queued membership change's number goes on from those in the feed (storage/schema_steps.py).
_HIGHEST_CHANGE = (
    "SELECT coalesce(max(seq), 0) FROM (SELECT max(seq) AS seq FROM segment_changes"
    " UNION ALL SELECT max(seq) FROM segment_change_queue) AS numbers"
)
CHUNK = 5_000


def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copies everything from ``source_url`` into the empty database at ``target_url``
    (its schema is created first); returns the rows copied per table."""
    for url in (source_url, target_url):  # both schemas up to date
        open_storage(Settings(database_url=url, fold_in_server=False)).close()
    copied: dict[str, int] = {}
    with _connected(source_url) as source, _connected(target_url) as target:
        if target.execute("SELECT count(*) FROM accounts").fetchone()[0]:
            raise ConfigurationError(
                f"{target_url} already holds data; copy only into a new, empty database"
            )
        target.execute("BEGIN")
        try:
            to_postgres = parse_database_url(target_url).scheme == "postgresql"
            for table in TABLES:
                copied[table] = _copy_table(source, target, table, to_postgres)
            highest = target.execute(_HIGHEST_POSITION).fetchone()[0] or 0
            if parse_database_url(target_url).scheme == "postgresql":
                target.execute("SELECT setval('batch_seqs', ?)", (max(1, highest),))
                for table, column in _NUMBERED:
                    target.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                    )
                target.execute(
                    "SELECT setval('profile_ids', (SELECT coalesce(max(id), 0) + 1"
                    " FROM profiles), false)"
                )
                target.execute(
                    "SELECT setval(pg_get_serial_sequence('segment_change_queue', 'seq'),"
                    f" ({_HIGHEST_CHANGE}) + 1, false)"
                )
            else:  # SQLite counts profile ids in fold_state; PostgreSQL has a sequence
                target.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'batches'",
                    (highest,),
                )
                target.execute("DELETE FROM sqlite_sequence WHERE name = 'segment_change_queue'")
                target.execute(
                    "INSERT INTO sqlite_sequence (name, seq)"
                    f" SELECT 'segment_change_queue', ({_HIGHEST_CHANGE})"
                )
                target.execute(
                    "INSERT INTO fold_state (name, value) SELECT 'last_profile_id',"
                    " coalesce(max(id), 0) FROM profiles WHERE 1 = 1"
                    " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
                )
        except BaseException:
            target.execute("ROLLBACK")
            raise
        target.execute("COMMIT")
    return copied


def _copy_table(source: SqlConnection, target: SqlConnection, table: str, to_postgres: bool) -> int:
    cursor = source.execute(f"SELECT * FROM {table}")
    columns = [column[0] for column in cursor.description]
    # SQLite keeps booleans as 0 and 1; PostgreSQL takes them as booleans only.
    flags = _boolean_columns(target, table) if to_postgres else set()
    converted = [index for index, name in enumerate(columns) if name in flags]
    insert = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        + _REPLACED.get(table, "")
    )
    total = 0
    while chunk := cursor.fetchmany(CHUNK):
        rows = [list(row) for row in chunk]
        for row in rows:
            for index in converted:
                row[index] = None if row[index] is None else bool(row[index])
        target.executemany(insert, rows)
        total += len(rows)
    return total


def _boolean_columns(target: SqlConnection, table: str) -> set[str]:
    rows = target.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
        " AND data_type = 'boolean'",
        (table,),
    ).fetchall()
    return {row[0] for row in rows}


@contextmanager
def _connected(url: str) -> Iterator[SqlConnection]:
    location = parse_database_url(url)
    if location.scheme == "postgresql":
        from eventfold.storage.postgres import QmarkConnection, connect

        with closing(QmarkConnection(connect(location.url))) as connection:
            yield connection
    else:
        from eventfold.storage.sqlite import connect as connect_sqlite

        assert location.path is not None
        with closing(connect_sqlite(location.path)) as sqlite_connection:
            yield sqlite_connection
