"""Storage backends behind one contract (``base``); ``open_storage`` picks one by URL."""

from __future__ import annotations

from collections.abc import Callable

from eventfold.settings import Settings, parse_database_url
from eventfold.storage.base import EventLog, Storage
from eventfold.storage.decoded_batches import DecodedBatches
from eventfold.storage.sql_store import SqlStorage


def open_storage(
    settings: Settings, on_commit: Callable[[int, float], None] | None = None
) -> Storage:
    """Opens (and migrates) the database that ``settings.database_url`` names;
    ``on_commit(jobs, seconds)`` hears about every group commit."""
    location = parse_database_url(settings.database_url)
    if location.scheme == "postgresql":
        from eventfold.storage.postgres import PostgresStorage

        return _handing_off(
            settings,
            PostgresStorage(
                location.url, max_pending_events=settings.max_pending_events, on_commit=on_commit
            ),
        )
    from eventfold.storage.sqlite import SqliteStorage

    assert location.path is not None
    storage = SqliteStorage(
        location.path,
        max_pending_events=settings.max_pending_events,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        on_commit=on_commit,
    )
    return _handing_off(settings, storage)


def _handing_off(settings: Settings, storage: SqlStorage) -> SqlStorage:
    """Where this process folds what it accepts on a thread, its appends hand the
    validated events to its fold (``DecodedBatches``); a fold in a child process, or
    JetStream's workers, read the log instead."""
    if settings.folds_on_a_thread and not settings.log_url:
        storage.decoded_batches = DecodedBatches()
        storage.appends_wake_the_fold = True
    return storage


def open_log(settings: Settings, storage: Storage) -> EventLog:
    """Where accepted batches go: JetStream when ``settings.log_url`` names it, else the
    database itself. A JetStream log connects in ``connect()``, on the server's loop."""
    if not settings.log_url:
        return storage
    from eventfold.storage.nats import NatsPublisher

    return NatsPublisher(settings, storage)
