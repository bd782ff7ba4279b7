"""Versioned schema migrations: a list of steps per backend (``schema_sqlite``,
``schema_postgres``), applied in order, each recorded in a ``schema_version`` table in
the same transaction.

A database whose schema is newer than this code knows is refused, so an old binary never
writes into a schema it does not understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from eventfold.errors import ConfigurationError
from eventfold.storage.identity_keys import indexed_value
from eventfold.storage.schema_sqlite import SQLITE_MIGRATIONS
from eventfold.storage.schema_steps import Statement, Step


def statements_of(step: Step) -> list[Statement]:
    """A step's statements, in order."""
    return list(step) if isinstance(step, tuple) else [p for p in step.split(";") if p.strip()]


def apply_migrations(
    steps: tuple[Step, ...],
    current: int,
    run_step: Callable[[int, list[Statement]], None],
) -> int:
    """Runs the steps after ``current`` (each via ``run_step(version, statements)``, in
    its own transaction that also records the version); returns the version now."""
    known = len(steps)
    if current > known:
        raise ConfigurationError(
            f"the database's schema is version {current}, newer than this eventfold knows "
            f"({known}); upgrade eventfold before using this database"
        )
    for version in range(current + 1, known + 1):
        step = steps[version - 1]
        run_step(version, statements_of(step))
    return known


def migrate_sqlite(connection: sqlite3.Connection) -> int:
    """Brings the schema up to date; returns the version it is at."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    connection.create_function("eventfold_indexed_value", 1, indexed_value, deterministic=True)

    def run_step(version: int, statements: list[Statement]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                if isinstance(statement, str):
                    connection.execute(statement)
                else:
                    statement(connection)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    return apply_migrations(SQLITE_MIGRATIONS, current, run_step)
