"""Moving a database to another backend (SQLite to PostgreSQL, typically) as it is:
accounts, keys, events with their positions, profiles, identifiers, idempotency keys,
segments with their members and change feed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager

from eventfold.errors import ConfigurationError
from eventfold.settings import Settings, parse_database_url
from eventfold.storage import open_storage
from eventfold.storage.sql import SqlConnection
from eventfold.storage.sql_store import EVENT_COLUMNS

# In an order that satisfies the foreign keys; every column of every table.
TABLES: dict[str, tuple[str, ...]] = {
    "accounts": ("id", "name", "created_at"),
    "api_keys": (
        "id",
        "account_id",
        "secret_hash",
        "created_at",
        "last_used_at",
        "revoked_at",
        "rate_limit",
    ),
    "events": ("seq", *EVENT_COLUMNS, "profile_id"),
    "profiles": ("id", "account_id", "state", "updated_at"),
    "identities": ("account_id", "kind", "value", "profile_id"),
    "fold_state": ("name", "value"),
    "quarantined_events": ("seq", "account_id", "error", "quarantined_at"),
    "merged_profiles": ("id", "account_id", "merged_into"),
    "idempotency_keys": ("account_id", "key", "body_hash", "created_at"),
    "unfolded": ("seq",),
    # Segments (docs/segments.md).
    "segments": (
        "id",
        "account_id",
        "key",
        "name",
        "definition",
        "version",
        "status",
        "created_at",
        "updated_at",
        "backfill_after",
    ),
    "segment_people": ("profile_id", "account_id", "leaves", "next_change_at"),
    "segment_members": ("segment_id", "profile_id", "since"),
    "segment_changes": (
        "seq",
        "account_id",
        "segment_id",
        "profile_id",
        "change",
        "at",
        "version",
        "feed_position",
    ),
}
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
            for table, columns in TABLES.items():
                if table == "unfolded":  # PostgreSQL's trigger queued every copied event
                    target.execute("DELETE FROM unfolded")
                if table == "fold_state":  # the migrations' own rows, replaced by the source's
                    target.execute("DELETE FROM fold_state")
                copied[table] = _copy_table(source, target, table, columns)
            if parse_database_url(target_url).scheme == "postgresql":
                for table, column in (
                    ("accounts", "id"),
                    ("events", "seq"),
                    ("segments", "id"),
                    ("segment_changes", "seq"),
                ):
                    target.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                    )
                target.execute(
                    "SELECT setval('profile_ids', (SELECT coalesce(max(id), 0) + 1"
                    " FROM profiles), false)"
                )
            else:  # SQLite counts profile ids in fold_state; PostgreSQL has a sequence
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


def _copy_table(
    source: SqlConnection, target: SqlConnection, table: str, columns: tuple[str, ...]
) -> int:
    names = ", ".join(columns)
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    rows = source.execute(f"SELECT {names} FROM {table}")
    total = 0
    while chunk := rows.fetchmany(CHUNK):
        target.executemany(insert, [tuple(row) for row in chunk])
        total += len(chunk)
    return total


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
