"""The contract's loose ends: locales, key look-ups and the fold's lag off the event
loop, failing fast with the database down, and 503s that say what is true."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.clock import now_ms
from eventfold.domain.keys import generate_secret
from eventfold.errors import StorageUnavailable, Unauthorized
from eventfold.services.auth import MAX_CACHED_UNKNOWN_KEYS, Authenticator
from eventfold.services.fold_lag import FoldLagGauge
from eventfold.settings import Settings
from eventfold.storage.base import FoldLag, KeyRecord, Principal, Storage
from eventfold.storage.group_commit import GroupCommitWriter
from eventfold.storage.sqlite import SqliteSession, SqliteStorage, connect
from tests.conftest import auth, stored

ROOT = Path(__file__).resolve().parent.parent


def post(client: TestClient, secret: str, **fields: Any) -> Any:
    event = {"action": "view", "email": "a@b.co", **fields}
    return client.post("/api/v0/events", json={"events": [event]}, headers=auth(secret))


@pytest.mark.parametrize("locale", ["en\n", "zz", "eng", "e", "en-US", "\nen"])
def test_a_locale_that_is_not_an_iso_639_1_code_is_400_naming_the_field(
    client: TestClient, storage: Storage, secret: str, account_id: int, locale: str
) -> None:
    response = post(client, secret, locale=locale)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errors"][0]["path"] == "events[0].locale"
    assert "ISO 639-1" in body["message"]
    assert "'en'" in body["message"]  # says what a valid value looks like
    assert stored(storage, account_id) == []


def test_an_iso_639_1_locale_in_any_case_is_stored_lower_case(
    client: TestClient, storage: Storage, secret: str, account_id: int
) -> None:
    assert post(client, secret, locale="Bg").status_code == 202
    assert [event["locale"] for event in stored(storage, account_id)] == ["bg"]


def test_a_name_with_a_trailing_newline_is_still_checked_for_nul(
    client: TestClient, secret: str
) -> None:
    response = post(client, secret, action="a\u0000\n")
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "events[0].action"


class CountingKeys:
    """A real key store that counts its look-ups and notes the threads they ran on."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.lookups = 0
        self.threads: set[int] = set()

    def find_key(self, secret_hash: bytes) -> Principal | None:
        self.lookups += 1
        self.threads.add(threading.get_ident())
        return self._storage.find_key(secret_hash)

    def touch_key(self, key_id: str, now_ms: int) -> None:
        self._storage.touch_key(key_id, now_ms)

    def create_key(
        self, account_name: str, now_ms: int, rate_limit: float | None = None
    ) -> tuple[KeyRecord, str]:
        raise NotImplementedError

    def set_rate_limit(self, key_id: str, rate_limit: float | None) -> bool:
        raise NotImplementedError

    def list_keys(self) -> list[KeyRecord]:
        raise NotImplementedError

    def revoke_key(self, key_id: str, now_ms: int) -> bool:
        raise NotImplementedError

    def has_keys(self) -> bool:
        raise NotImplementedError


def test_key_look_ups_run_off_the_loop_and_a_flood_of_unknown_keys_keeps_valid_ones_cached(
    storage: Storage, secret: str
) -> None:
    keys = CountingKeys(storage)
    authenticator = Authenticator(keys, cache_seconds=60)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        assert (await authenticator.authenticate(f"Bearer {secret}")).account_name == "acme"
        assert keys.lookups == 1
        assert loop_thread not in keys.threads
        # Not the shape of an eventfold key: refused without a look-up.
        for bad in ("nope", "efsk_short", "x" * 48):
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(f"Bearer {bad}")
        assert keys.lookups == 1
        # The same unknown key, again and again: one look-up.
        unknown = generate_secret()
        for _ in range(50):
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(f"Bearer {unknown}")
        assert keys.lookups == 2
        # More unknown keys than the negative cache holds: the valid key stays cached.
        for _ in range(MAX_CACHED_UNKNOWN_KEYS + 100):
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(f"Bearer {generate_secret()}")
        flooded = keys.lookups
        assert (await authenticator.authenticate(f"Bearer {secret}")).account_name == "acme"
        assert keys.lookups == flooded

    asyncio.run(scenario())


class CountingLog:
    """An event log whose backlog takes a while and counts its reads."""

    def __init__(self) -> None:
        self.reads = 0

    async def backlog(self, now_ms: int) -> FoldLag:
        self.reads += 1
        await asyncio.sleep(0.05)
        return FoldLag(events=self.reads, seconds=0.0)


def test_the_fold_lag_is_read_once_for_many_askers_and_reused_briefly() -> None:
    log = CountingLog()
    clock = [100.0]
    gauge = FoldLagGauge(log, max_age_seconds=0.5, monotonic=lambda: clock[0])  # type: ignore[arg-type]

    async def scenario() -> None:
        answers = await asyncio.gather(*(gauge.current() for _ in range(100)))
        assert {lag.events for lag in answers} == {1}
        assert log.reads == 1
        clock[0] += 0.4
        assert (await gauge.current()).events == 1
        clock[0] += 0.2
        assert (await gauge.current()).events == 2

    asyncio.run(scenario())


class EmptyLog:
    def __init__(self) -> None:
        self.reads = 0

    async def backlog(self, now_ms: int) -> FoldLag:
        self.reads += 1
        return FoldLag(events=0, seconds=0.0)


def test_the_lag_is_read_again_once_this_process_accepted_events_after_the_reading() -> None:
    log = EmptyLog()
    gauge = FoldLagGauge(log, max_age_seconds=60)  # type: ignore[arg-type]

    async def scenario() -> None:
        assert (await gauge.current()).events == 0
        assert (await gauge.current()).events == 0
        assert log.reads == 1  # reused
        gauge.accepted(3)  # a batch after the reading: the reading cannot tell of it
        assert (await gauge.current()).events == 0  # the fold took it meanwhile
        assert log.reads == 2
        gauge.accepted(1)
        await gauge.outlook()  # backpressure reuses the reading, and predicts from it
        assert log.reads == 2

    asyncio.run(scenario())


class SlowEmptyLog(EmptyLog):
    async def backlog(self, now_ms: int) -> FoldLag:
        self.reads += 1
        await asyncio.sleep(0.05)
        return FoldLag(events=0, seconds=0.0)


def test_a_reading_begun_before_an_acceptance_does_not_answer_for_it() -> None:
    log = SlowEmptyLog()
    gauge = FoldLagGauge(log, max_age_seconds=60)  # type: ignore[arg-type]

    async def scenario() -> None:
        backpressure = asyncio.create_task(gauge.outlook())  # its reading begins
        await asyncio.sleep(0.01)
        gauge.accepted(2)  # a batch answered 202 while that reading runs
        await gauge.current()
        await backpressure
        assert log.reads == 2  # /healthz waited for a reading begun after the batch

    asyncio.run(scenario())


def test_the_databases_fold_lag_is_counted_off_the_event_loop(storage: Storage) -> None:
    threads: list[int] = []
    original = storage.fold_lag

    def fold_lag(now: int) -> FoldLag:
        threads.append(threading.get_ident())
        return original(now)

    storage.fold_lag = fold_lag  # type: ignore[method-assign, assignment]

    async def scenario() -> int:
        await storage.backlog(now_ms())
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert threads
    assert loop_thread not in threads


class UnreachableSqlite(SqliteStorage):
    """A database that stopped answering: every new connection takes a while to fail,
    like a connect timeout."""

    connect_attempts = 0

    def _connect_reader(self) -> Any:
        self.connect_attempts += 1
        time.sleep(0.5)
        raise sqlite3.OperationalError("could not connect")


def test_with_the_database_down_reads_fail_fast_instead_of_each_waiting(tmp_path: Path) -> None:
    storage = UnreachableSqlite(tmp_path / "down.db")
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="could not connect"):
            storage.find_key(b"x" * 32)
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(StorageUnavailable, match="could not connect"):
                storage.find_key(b"x" * 32)
        rest = time.monotonic() - started
        assert first >= 0.5
        assert rest < 0.5, f"20 reads took {rest:.2f} s with the database down"
        assert storage.connect_attempts == 1
    finally:
        storage.close()


class CommitLostSession(SqliteSession):
    """A session whose connection is lost while COMMIT is in flight."""

    def execute(self, statement: str) -> None:
        if statement == "COMMIT":
            raise sqlite3.OperationalError("server closed the connection unexpectedly")
        super().execute(statement)

    def connection_lost(self) -> bool:
        return True


def test_a_commit_whose_outcome_is_unknown_says_the_batch_may_have_been_stored(
    tmp_path: Path,
) -> None:
    writer = GroupCommitWriter(CommitLostSession(connect(tmp_path / "w.db")), 100)
    try:
        with pytest.raises(StorageUnavailable) as raised:
            writer.run(lambda connection: connection.execute("SELECT 1"))
        assert "may or may not have been stored" in raised.value.message
        assert "same Idempotency-Key" in raised.value.message
    finally:
        writer.close()


def test_a_write_that_fails_before_commit_still_says_nothing_was_stored(tmp_path: Path) -> None:
    writer = GroupCommitWriter(SqliteSession(connect(tmp_path / "w.db")), 100)

    def overfill(connection: sqlite3.Connection) -> None:
        connection.execute("PRAGMA max_page_count = 1")  # a full disk
        connection.execute("CREATE TABLE t AS SELECT zeroblob(100000) AS b")

    try:
        with pytest.raises(StorageUnavailable, match="nothing was stored"):
            writer.run(overfill)
    finally:
        writer.close()


def test_expired_idempotency_keys_are_found_by_an_index(
    settings: Settings, storage: Storage
) -> None:
    query = "DELETE FROM idempotency_keys WHERE created_at < 0"
    if settings.database_url.startswith("sqlite"):
        with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as connection:
            plan = " ".join(str(row) for row in connection.execute("EXPLAIN QUERY PLAN " + query))
    else:
        import psycopg

        with psycopg.connect(settings.database_url) as connection:
            connection.execute("SET enable_seqscan = off")
            plan = " ".join(str(row) for row in connection.execute("EXPLAIN " + query))
    assert "idempotency_keys_by_age" in plan, plan


def test_the_test_command_stops_with_one_line_when_it_cannot_install_what_is_missing(
    tmp_path: Path,
) -> None:
    # A machine without wrk where the user is not root: a PATH with only the basics.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "ls", "head", "seq", "sleep"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    (bin_dir / "id").write_text("#!/usr/bin/bash\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    result = subprocess.run(
        ["/usr/bin/bash", str(ROOT / "scripts" / "install-system")],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "wrk" in lines[0]
    assert "apt-get install" in lines[0]
