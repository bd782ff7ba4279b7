"""Crash safety of the fold: `eventfold worker` is SIGKILLed mid-run and restarted, and
every event is still folded exactly once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.profile import ProfileState
from eventfold.domain.validation import BatchValidator
from eventfold.storage.sqlite import SqliteStorage

PEOPLE = 300
EVENTS = 24_000


def fill(path: Path) -> Counter[str]:
    storage = SqliteStorage(path)
    storage.create_key("acme", now_ms())
    validator = BatchValidator(Limits())
    expected: Counter[str] = Counter()

    async def append_all() -> None:
        for start in range(0, EVENTS, 1_000):
            people = [f"p{(start + i) % PEOPLE}@x.co" for i in range(1_000)]
            expected.update(people)
            body = msgspec.json.encode({"events": [{"action": "view", "email": p} for p in people]})
            await storage.append(1, now_ms(), validator.validate(body, now_ms()))

    asyncio.run(append_all())
    storage.close()
    return expected


def progress(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        row = connection.execute("SELECT count(*) FROM events WHERE profile_id IS NOT NULL")
        return int(row.fetchone()[0])


def start_worker(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "eventfold", "worker", "--database", f"sqlite:///{path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_worker_killed_between_and_during_folds_folds_every_event_exactly_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    expected = fill(path)
    kills = 0
    while kills < 3:
        before = progress(path)
        worker = start_worker(path)
        deadline = time.monotonic() + 30
        while progress(path) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    assert 0 < progress(path) < EVENTS, "the kills should land mid-run"
    worker = start_worker(path)
    deadline = time.monotonic() + 60
    while progress(path) < EVENTS and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0

    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM batches").fetchone()[0] == 0
        states = [
            msgspec.json.decode(s, type=ProfileState)
            for (s,) in connection.execute("SELECT state FROM profiles")
        ]
    counted = Counter({state.emails[0]: state.event_count for state in states})
    assert counted == expected
    assert sum(counted.values()) == EVENTS
