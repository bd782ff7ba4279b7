"""Group commit: one thread owns the write connection, and the batches of many
concurrent requests are committed in one transaction, so one fsync covers them all.

Each job runs inside its own SAVEPOINT: a job that fails is rolled back alone and the
others in the same transaction still commit. The backend's side of this is a small
``WriteSession`` (SQLite's and PostgreSQL's are in their modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from eventfold.errors import Overloaded, StorageUnavailable

logger = logging.getLogger("eventfold.storage")
T = TypeVar("T")
Job = Callable[[Any], T]  # runs on the backend's connection, inside the group transaction


class WriteSession(Protocol):
    """A backend's write connection, as the writer drives it."""

    # Errors that mean "the database cannot take this write now" (answered 503).
    storage_errors: tuple[type[Exception], ...]

    def connection(self) -> Any:
        """The connection jobs run on (reconnecting first if it was lost)."""

    def execute(self, statement: str) -> None:
        """Runs a transaction-control statement: SAVEPOINT, COMMIT, ROLLBACK, ..."""

    def begin(self) -> None:
        """Starts the group's transaction, taking the write lock where there is one."""

    def in_transaction(self) -> bool:
        """Whether a transaction is open (a database may roll one back by itself)."""

    def connection_lost(self) -> bool:
        """Whether the connection to the database is gone: a COMMIT that failed that way
        may or may not have taken effect."""

    def close(self) -> None:
        """Closes the connection."""


# A transaction stops taking more jobs past this many rows, so one commit stays short.
MAX_ROWS_PER_COMMIT = 50_000


@dataclass(slots=True)
class _Queued:
    job: Job[Any]
    rows: int
    # An awaiting caller's future is its event loop's own: the writer settles a group's
    # futures with one wake-up of that loop (``_settle``), where a thread-safe future for
    # each would wake it once per job.
    future: Future[Any] | asyncio.Future[Any]


def storage_unavailable(error: Exception) -> StorageUnavailable:
    """The client-facing form of a database's failure to write (full, locked, down)."""
    return StorageUnavailable(
        f"the event store cannot take writes right now ({error}); nothing was stored, retry later"
    )


class _Outcome(NamedTuple):
    """A job, and what it returned or the error it failed with."""

    queued: _Queued
    result: Any
    failure: BaseException | None


def _settle(outcomes: list[_Outcome]) -> None:
    """Hands each job's outcome to its caller (on the caller's event loop for ``submit``);
    a caller that stopped waiting (its task cancelled) is skipped, and one outcome that
    cannot be handed over never keeps the others from theirs."""
    for queued, result, failure in outcomes:
        future = queued.future
        try:
            if future.done():
                continue
            if failure is None:
                future.set_result(result)
            else:
                future.set_exception(failure)
        except InvalidStateError:
            continue  # a blocking caller's future, cancelled since done() said no
        except Exception:
            logger.exception("a write's outcome could not be handed to its caller")


class _CommitOutcomeUnknown(Exception):
    """The connection was lost while COMMIT was in flight."""


def _outcome_unknown(error: BaseException) -> StorageUnavailable:
    return StorageUnavailable(
        f"the connection to the database was lost while committing ({error}); the batch may "
        "or may not have been stored: retry with the same Idempotency-Key, which stores it "
        "at most once"
    )


class GroupCommitWriter:
    """Runs write jobs on one thread; callers await them (``submit``) or block (``run``)."""

    def __init__(
        self,
        session: WriteSession,
        max_pending_rows: int,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._session = session
        self._on_commit = on_commit
        self._max_pending_rows = max_pending_rows
        self._pending_rows = 0
        self.commits = 0  # transactions committed, for metrics and tests
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="eventfold-writer", daemon=True)
        self._thread.start()

    async def submit(self, job: Job[T], rows: int = 1) -> T:
        """Runs ``job`` in the next group transaction; returns once it is committed. A
        caller that stops waiting (its task cancelled) leaves the job to commit."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(_Queued(job, rows, done))
        return await done

    def run(self, job: Job[T], rows: int = 1) -> T:
        """The blocking form of ``submit``, for command-line use."""
        result: T = self._enqueue(job, rows).result()
        return result

    def enqueue_quietly(self, job: Job[Any]) -> None:
        """Queues a job whose outcome nobody waits for; dropped when the queue is full."""
        with contextlib.suppress(Overloaded):
            self._enqueue(job, 1)

    def close(self) -> None:
        """Commits what is queued, then stops the thread and closes the connection."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._session.close()

    def _enqueue(self, job: Job[Any], rows: int) -> Future[Any]:
        """Queues ``job`` with a future any thread can wait on."""
        done: Future[Any] = Future()
        self._put(_Queued(job, rows, done))
        return done

    def _put(self, queued: _Queued) -> None:
        with self._lock:
            if self._pending_rows + queued.rows > self._max_pending_rows and self._pending_rows:
                raise Overloaded(
                    f"the writer has {self._pending_rows} events queued (limit "
                    f"{self._max_pending_rows}); nothing was stored, retry shortly"
                )
            self._pending_rows += queued.rows
        self._queue.put(queued)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group, rows = [first], first.rows
            while rows < MAX_ROWS_PER_COMMIT:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stopping = True
                    break
                group.append(queued)
                rows += queued.rows
            try:
                self._hand_over(self._commit(group))
            except Exception as error:  # a fault of the writer's own: fail the group, go on
                logger.exception("the writer failed a group of %d jobs", len(group))
                self._hand_over([_Outcome(queued, None, error) for queued in group])
            finally:
                with self._lock:
                    self._pending_rows -= rows

    def _commit(self, group: list[_Queued]) -> list[_Outcome]:
        started = time.perf_counter()
        try:
            outcomes = self._run_in_one_transaction(group)
        except Exception as error:
            self._roll_back()
            failure = self._translate(error)
            return [_Outcome(queued, None, failure) for queued in group]
        if self._on_commit is not None:
            try:
                self._on_commit(len(group), time.perf_counter() - started)
            except Exception:  # the group is committed whatever a metric says
                logger.exception("recording a commit failed")
        return outcomes

    def _roll_back(self) -> None:
        """Rolls back a failed group's transaction, if the database has not already."""
        try:
            if self._session.in_transaction():
                self._session.execute("ROLLBACK")
        except self._session.storage_errors as error:  # a lost connection: nothing to undo
            logger.warning("rolling back a failed group failed: %s", error)

    @staticmethod
    def _hand_over(outcomes: list[_Outcome]) -> None:
        """Settles blocking callers' futures here, and each event loop's callers' with
        one wake-up of that loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            future = outcome.queued.future
            if isinstance(future, asyncio.Future):
                by_loop.setdefault(future.get_loop(), []).append(outcome)
            else:
                _settle([outcome])
        for loop, settled_there in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled_there)

    def _translate(self, error: Exception) -> Exception:
        if isinstance(error, _CommitOutcomeUnknown):
            return _outcome_unknown(error.__cause__ or error)
        if isinstance(error, self._session.storage_errors):
            return storage_unavailable(error)
        if isinstance(error, StopIteration):  # an asyncio future refuses to carry one
            failure = RuntimeError(f"a write job raised StopIteration: {error!r}")
            failure.__cause__ = error
            return failure
        return error

    def _run_in_one_transaction(self, group: list[_Queued]) -> list[_Outcome]:
        session = self._session
        session.begin()
        connection = session.connection()
        outcomes: list[_Outcome] = []
        for queued in group:
            session.execute("SAVEPOINT job")
            try:
                outcomes.append(_Outcome(queued, queued.job(connection), None))
            except Exception as error:
                if not session.in_transaction():
                    raise  # the database rolled back the whole group (disk full, I/O error)
                session.execute("ROLLBACK TO SAVEPOINT job")
                outcomes.append(_Outcome(queued, None, self._translate(error)))
            session.execute("RELEASE SAVEPOINT job")
        try:
            session.execute("COMMIT")
        except session.storage_errors as error:
            if session.connection_lost():
                raise _CommitOutcomeUnknown(str(error)) from error
            raise
        self.commits += 1
        return outcomes
