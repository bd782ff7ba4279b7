"""The SQLite writer thread: many jobs, one transaction; a failing job fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eventfold.errors import Overloaded, StorageUnavailable
from eventfold.storage.group_commit import GroupCommitWriter
from eventfold.storage.sqlite import SqliteSession, connect


def make_writer(tmp_path: Path, max_pending_rows: int = 1_000) -> GroupCommitWriter:
    connection = connect(tmp_path / "w.db")
    connection.execute("CREATE TABLE t (v INTEGER NOT NULL)")
    return GroupCommitWriter(SqliteSession(connection), max_pending_rows)


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def job(connection: sqlite3.Connection) -> int:
        connection.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return job


def stored_values(tmp_path: Path) -> list[int]:
    with sqlite3.connect(tmp_path / "w.db") as reader:
        return [row[0] for row in reader.execute("SELECT v FROM t ORDER BY v")]


def hold_writer(writer: GroupCommitWriter) -> threading.Event:
    """Blocks the writer inside a job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def wait(connection: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    writer._enqueue(wait, 1)
    assert started.wait(10)
    return release


def test_jobs_queued_together_commit_in_one_transaction_and_a_failing_one_fails_alone(
    tmp_path: Path,
) -> None:
    writer = make_writer(tmp_path)
    release = hold_writer(writer)

    def fail(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO t (v) VALUES (2)")
        raise ValueError("this job is broken")

    first = writer._enqueue(insert(1), 1)
    broken = writer._enqueue(fail, 1)
    last = writer._enqueue(insert(3), 1)
    release.set()
    assert first.result(10) == 1
    assert last.result(10) == 3
    with pytest.raises(ValueError, match="broken"):
        broken.result(10)
    writer.close()
    assert writer.commits == 2  # the holding job, then the three queued ones together
    assert stored_values(tmp_path) == [1, 3]


def test_many_concurrent_submits_share_few_commits(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)

    async def submit_all() -> list[int]:
        return await asyncio.gather(*(writer.submit(insert(v)) for v in range(200)))

    assert asyncio.run(submit_all()) == list(range(200))
    writer.close()
    assert stored_values(tmp_path) == list(range(200))
    assert writer.commits < 50


def test_queue_past_its_bound_is_refused_with_overloaded(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, max_pending_rows=10)
    release = hold_writer(writer)
    writer._enqueue(insert(1), 9)
    with pytest.raises(Overloaded, match="retry"):
        writer._enqueue(insert(2), 5)
    release.set()
    writer.close()
    assert stored_values(tmp_path) == [1]


def test_disk_full_fails_the_job_with_storage_unavailable_and_the_writer_recovers(
    tmp_path: Path,
) -> None:
    writer = make_writer(tmp_path)
    writer.run(lambda c: c.execute("PRAGMA max_page_count = 3"))  # a tiny "disk"

    def fill(connection: sqlite3.Connection) -> None:
        connection.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in range(100_000)])

    with pytest.raises(StorageUnavailable, match="full"):
        writer.run(fill)
    writer.run(lambda c: c.execute("PRAGMA max_page_count = 1000000"))
    assert writer.run(insert(7)) == 7
    writer.close()
    assert stored_values(tmp_path) == [7]


def test_a_caller_that_stops_waiting_leaves_its_job_to_commit_and_the_writer_running(
    tmp_path: Path,
) -> None:
    """A cancelled ``submit`` (a request cut short) still commits its job, and the
    caller queued after it in the same group is answered (settling a cancelled caller's
    future must neither stop the writer's thread nor skip the others)."""
    writer = make_writer(tmp_path)
    release = hold_writer(writer)

    async def cancel_one() -> int:
        waiting = asyncio.ensure_future(writer.submit(insert(1)))
        following = asyncio.ensure_future(writer.submit(insert(2)))
        while writer._pending_rows < 3:  # both queued behind the held job
            await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.sleep(0)
        release.set()
        return await asyncio.wait_for(following, 10)

    assert asyncio.run(cancel_one()) == 2
    writer.close()
    assert writer.commits == 2  # the holding job, then both queued ones together
    assert stored_values(tmp_path) == [1, 2]


def test_submits_from_two_event_loops_in_one_group_are_each_answered(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    release = hold_writer(writer)
    answers: dict[int, list[int]] = {}

    def on_a_loop_of_its_own(base: int) -> None:
        async def submit_some() -> list[int]:
            return list(await asyncio.gather(*(writer.submit(insert(base + v)) for v in range(5))))

        answers[base] = asyncio.run(submit_some())

    threads = [
        threading.Thread(target=on_a_loop_of_its_own, args=(base,), daemon=True) for base in (0, 10)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while writer._pending_rows < 11 and time.monotonic() < deadline:  # the held job and ten
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    writer.close()
    assert writer.commits == 2
    assert answers == {0: [0, 1, 2, 3, 4], 10: [10, 11, 12, 13, 14]}
    assert stored_values(tmp_path) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_a_job_raising_stop_iteration_fails_alone_and_its_group_is_answered(
    tmp_path: Path,
) -> None:
    """An asyncio future refuses StopIteration as an exception: the writer hands the
    caller a RuntimeError instead, and the others in the group still get theirs."""
    writer = make_writer(tmp_path)
    release = hold_writer(writer)

    def exhausted(connection: sqlite3.Connection) -> int:
        return next(iter([]))

    async def submit_both() -> list[object]:
        jobs = [writer.submit(exhausted), writer.submit(insert(5))]
        tasks = [asyncio.ensure_future(job) for job in jobs]
        while writer._pending_rows < 3:
            await asyncio.sleep(0.01)
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10))

    failed, stored = asyncio.run(submit_both())
    assert isinstance(failed, RuntimeError)
    assert "StopIteration" in str(failed)
    assert stored == 5
    writer.close()
    assert stored_values(tmp_path) == [5]


def test_a_failing_metric_leaves_a_committed_group_reported_as_committed(tmp_path: Path) -> None:
    connection = connect(tmp_path / "w.db")
    connection.execute("CREATE TABLE t (v INTEGER NOT NULL)")

    def broken_metric(jobs: int, seconds: float) -> None:
        raise ValueError("the metrics registry is broken")

    writer = GroupCommitWriter(SqliteSession(connection), 1_000, on_commit=broken_metric)
    assert writer.run(insert(4)) == 4
    assert writer.run(insert(6)) == 6  # and the writer goes on
    writer.close()
    assert stored_values(tmp_path) == [4, 6]
