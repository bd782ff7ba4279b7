"""Poison never blocks the fold: an event that cannot be folded is set aside with its
error, everything else folds on, and an operator can retry it once the cause is fixed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from starlette.testclient import TestClient

from eventfold.cli import main
from eventfold.clock import now_ms
from eventfold.domain.keys import hash_secret
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.errors import StorageUnavailable
from eventfold.services.fold import FoldService
from eventfold.settings import Settings
from eventfold.storage import open_storage
from eventfold.storage.base import EventQuery, FoldStep, Storage
from eventfold.storage.sqlite import SqliteStorage
from eventfold.worker import FoldWorker
from tests.conftest import auth, post_events, wait_for_fold
from tests.databases import fresh_database

POISON = "poison@example.com"


@contextmanager
def poisoned(database_url: str) -> Iterator[None]:
    """A database that refuses to file the identifier POISON (a constraint added by an
    operator, say) until the block ends."""
    if database_url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        lite.execute(
            f"CREATE TRIGGER poison BEFORE INSERT ON identities WHEN NEW.value = '{POISON}'"
            " BEGIN SELECT RAISE(ABORT, 'this identifier is refused'); END"
        )
        try:
            yield
        finally:
            lite.execute("DROP TRIGGER poison")
            lite.close()
        return
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'this identifier is refused'; END $$"
        )
        connection.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON identities FOR EACH ROW"
            f" WHEN (NEW.value = '{POISON}') EXECUTE FUNCTION refuse_poison()"
        )
        try:
            yield
        finally:
            connection.execute("DROP TRIGGER poison ON identities")
            connection.execute("DROP FUNCTION refuse_poison()")


def profile_status(client: TestClient, secret: str, email: str) -> int:
    response = client.get("/api/v0/profiles", params={"email": email}, headers=auth(secret))
    return response.status_code


def test_a_poison_event_is_quarantined_and_the_other_accounts_events_fold_within_two_seconds(
    client: TestClient, storage: Storage, settings: Settings, secret: str
) -> None:
    other = storage.create_key("other", now_ms())[1]
    with poisoned(settings.database_url):
        post_events(client, secret, {"action": "view", "email": POISON})
        post_events(client, other, {"action": "view", "email": "fine@example.com"})
        posted = time.monotonic()
        while profile_status(client, other, "fine@example.com") != 200:
            assert time.monotonic() - posted < 2, "the other account's event did not fold"
            time.sleep(0.02)
        wait_for_fold(client)
        [set_aside] = storage.quarantined(10)
        assert "this identifier is refused" in set_aside.error
        health = client.get("/healthz").json()
        assert health["lag"]["quarantined"] == 1
        assert profile_status(client, secret, POISON) == 404
        # Retried while the cause is still there: quarantined again, nothing else stops.
        assert storage.release_quarantined() == 1
        deadline = time.monotonic() + 10
        while not storage.quarantined(10):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # The cause is fixed: the operator's retry folds it.
    assert main(["fold", "quarantine", "retry", "--database", settings.database_url]) == 0
    deadline = time.monotonic() + 10
    while profile_status(client, secret, POISON) != 200:
        assert time.monotonic() < deadline, "the retried event did not fold"
        time.sleep(0.05)
    assert storage.quarantined(10) == []
    assert client.get("/readyz").status_code == 200


def test_the_quarantine_is_listed_by_the_command_line(
    client: TestClient,
    storage: Storage,
    settings: Settings,
    secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with poisoned(settings.database_url):
        post_events(client, secret, {"action": "view", "email": POISON})
        deadline = time.monotonic() + 10
        while not storage.quarantined(10):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    capsys.readouterr()
    assert main(["fold", "quarantine", "list", "--database", settings.database_url]) == 0
    listed = capsys.readouterr().out
    assert "this identifier is refused" in listed
    assert str(storage.quarantined(10)[0].seq) in listed


def test_a_profile_id_longer_than_an_index_entry_folds_and_is_found(
    client: TestClient, secret: str
) -> None:
    long_ref = "p" * 4_000
    post_events(
        client, secret, {"action": "view", "email": "long@example.com", "profileId": long_ref}
    )
    wait_for_fold(client)
    response = client.get("/api/v0/profiles", params={"profileId": long_ref}, headers=auth(secret))
    assert response.status_code == 200, response.text
    assert response.json()["emails"] == ["long@example.com"]
    events = client.get(
        "/api/v0/events", params={"profileId": long_ref}, headers=auth(secret)
    ).json()["events"]
    assert len(events) == 1


class DatabaseDown(SqliteStorage):
    """Every fold fails and the database does not answer: an outage, not poison."""

    def fold(self, step: FoldStep, rows: int = 1) -> int:
        raise StorageUnavailable("connection refused")

    def database_answers(self) -> bool:
        return False


def test_an_outage_quarantines_nothing(tmp_path: Path) -> None:
    store = DatabaseDown(tmp_path / "down.db")
    quarantined: list[int] = []
    try:
        fold = FoldService(store, on_quarantine=lambda seq, _: quarantined.append(seq))
        with pytest.raises(StorageUnavailable, match="does not answer"):
            fold.fold_pending(100)
        assert quarantined == []
    finally:
        store.close()


def test_a_poison_event_is_taken_out_of_its_batch_and_the_rest_of_the_batch_folds(
    client: TestClient, storage: Storage, settings: Settings, secret: str, account_id: int
) -> None:
    batch = [
        {"action": "first", "email": "a@example.com"},
        {"action": "poisoned", "email": POISON},
        {"action": "third", "email": "b@example.com"},
    ]
    with poisoned(settings.database_url):
        post_events(client, secret, *batch)
        listed = client.get("/api/v0/events", params={"order": "asc"}, headers=auth(secret))
        assert [e["action"] for e in listed.json()["events"]] == ["first", "third"]
        [set_aside] = storage.quarantined(10)
    assert storage.release_quarantined() == 1
    wait_for_fold(client)
    listed = client.get("/api/v0/events", params={"order": "asc"}, headers=auth(secret))
    assert [e["action"] for e in listed.json()["events"]] == ["first", "poisoned", "third"]
    # Each event kept its position in the batch, the quarantined one too.
    seqs = [e.seq for e in storage.list_events(EventQuery(account_id, limit=10, ascending=True))]
    assert seqs[1] == set_aside.seq
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]


def test_a_batch_another_fold_holds_is_neither_split_nor_set_aside(tmp_path: Path) -> None:
    """PostgreSQL: while one fold holds a batch (its claim's row lock), another fold's
    failure path leaves it alone instead of splitting or quarantining it under it."""
    with fresh_database("postgres", tmp_path) as url:
        storage = open_storage(Settings(database_url=url, fold_in_server=False))
        try:
            storage.create_key("acme", now_ms())
            body = b'{"events": [{"action": "a", "email": "a@b.co"}, {"action": "b",'
            body += b' "email": "c@d.co"}]}'
            events = BatchValidator(Limits()).validate(body, now_ms())
            asyncio.run(storage.append(1, now_ms(), events))
            [seq] = storage.pending_batches(10)
            with psycopg.connect(url) as holder:  # another fold's claim, in flight
                holder.execute("SELECT seq FROM batches WHERE seq = %s FOR UPDATE", (seq,))
                assert storage.split_batch(seq) == []
                storage.quarantine(seq, "a failure seen by the other fold")
                assert storage.quarantined(10) == []
            assert storage.pending_batches(10) == [seq]  # still one batch of two events
            assert FoldService(storage).fold_pending(10) == 2
        finally:
            storage.close()


class UnreadableWhileIdle(SqliteStorage):
    """Its idle wait fails twice as a file that cannot be read fails (not a locked one,
    which the wait already rides out)."""

    failures = 2

    def wait_for_events(self, timeout: float) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.DatabaseError("file is not a database")
        super().wait_for_events(timeout)


def test_a_failing_idle_wait_is_retried_and_the_fold_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = UnreadableWhileIdle(tmp_path / "idle.db")
    worker = FoldWorker(store, idle_poll_seconds=0.01)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while store.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.failures == 0
        secret = store.create_key("idle", now_ms())[1]
        principal = store.find_key(hash_secret(secret))
        assert principal is not None
        events = BatchValidator(Limits()).validate(
            b'{"events": [{"action": "view", "email": "a@b.co"}]}', now_ms()
        )
        asyncio.run(store.append(principal.account_id, now_ms(), events))
        while store.pending_batches(1) and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        assert store.pending_batches(1) == []  # folded by the loop that met the failures
        assert worker.health.running
        assert caplog.text.count("file is not a database") == 2  # each failure reported
    finally:
        worker.stop()
        store.close()
