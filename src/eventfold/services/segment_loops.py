"""The segments' background loops: the backfill (evaluates existing profiles for a new
or changed segment, ``preparing`` -> ``ready``) and the timer (re-evaluates people whose
next change moment has come, with no new event). Both run in small transactions of
their own beside the fold, so ingest and the fold never wait for them for long.

Each loop is supervised: an error is logged, shown in its health, and the loop tries
again; what still fails alone (one person) is set aside and logged rather than retried
for ever, so one person never stops the loop for everyone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import msgspec

from eventfold.clock import now_ms
from eventfold.errors import StorageUnavailable
from eventfold.services.fold import FoldHealth, LoopsHealth, combined_health, describe
from eventfold.services.segment_evaluation import (
    AccountSegments,
    Evaluation,
    compile_accounts,
)
from eventfold.storage.segment_contract import SegmentRecords, SegmentStore

logger = logging.getLogger("eventfold.segments")

BACKFILL_STEP = 500  # profiles a backfill transaction evaluates
TIMER_STEP = 500  # people a timer transaction re-evaluates
# A person whose re-evaluation fails alone is looked at again after this long.
SET_ASIDE_MS = 3_600_000
# A backfill step of at least this many profiles that all fail to decode fails as a
# whole (the data, not a profile, is at fault) instead of leaving them all out.
SYSTEMIC_FAILURES = 10


def backfill_step(store: SegmentStore, profiles: int = BACKFILL_STEP) -> bool:
    """Evaluates the next ``profiles`` profiles for one preparing segment; whether there
    was a preparing segment. A profile whose stored records cannot be decoded is left out
    (and logged), in the same transaction, so one such profile never keeps the segment,
    or those after it, preparing for ever."""

    def job(records: SegmentRecords) -> bool:
        segment = records.preparing_segment()
        if segment is None:
            return False
        account = segment.account_id
        accounts = compile_accounts(records.definitions([account]))
        try:
            found = records.profiles_after(account, segment.backfill_after, profiles)
            Evaluation(records, accounts, save_all=True).run(
                {pid: (account, state) for pid, state in found.items()}
            )
            seen = list(found)
        except msgspec.DecodeError:
            seen = records.profile_ids_after(account, segment.backfill_after, profiles)
            _backfill_one_by_one(records, accounts, segment.key, seen)
        records.update_segment(
            dataclasses.replace(
                segment,
                backfill_after=max(seen, default=segment.backfill_after),
                status="ready" if len(seen) < profiles else "preparing",
            )
        )
        return True

    return store.segments_transaction(job)


def _backfill_one_by_one(
    records: SegmentRecords,
    accounts: Mapping[int, AccountSegments],
    segment_key: str,
    profile_ids: Sequence[int],
) -> None:
    """Evaluates these profiles one at a time, leaving out (and logging) each whose stored
    records cannot be decoded. Nothing is written before a profile's records are all
    read, so a failed one leaves no trace. When every one of SYSTEMIC_FAILURES or more
    fails, the fault is not theirs: the error is raised (the step is tried again, and
    shown in the health)."""
    failures: list[msgspec.DecodeError] = []
    for pid in profile_ids:
        try:
            Evaluation(records, accounts, save_all=True).run(records.lock_profiles([pid]))
        except msgspec.DecodeError as error:
            failures.append(error)
            logger.error(
                "profile %d cannot be evaluated for segment %s (its stored records cannot be"
                " decoded); left out of the backfill: %s",
                pid,
                segment_key,
                error,
            )
    if len(profile_ids) >= SYSTEMIC_FAILURES and len(failures) == len(profile_ids):
        raise failures[0]


def timer_step(
    store: SegmentStore, clock: Callable[[], int] = now_ms, people: int = TIMER_STEP
) -> int:
    """Re-evaluates up to ``people`` people whose next change moment has passed; returns
    how many. A step that fails is tried person by person; a person that fails alone is
    set aside for an hour (and logged). The database's failures (down, a lock not
    granted in time) fail the step instead: they are nobody's own, and it is retried."""
    now = clock()
    due: list[int] = store.segments_transaction(lambda r: r.due_people(now, people), now)
    if not due:
        return 0
    try:
        store.segments_transaction(lambda r: _reevaluate(r, due), now)
    except StorageUnavailable:
        raise
    except Exception as error:
        logger.warning(
            "segment timer step failed, trying its people one by one: %s", describe(error)
        )
        for pid in due:
            try:
                store.segments_transaction(partial(_reevaluate, due=[pid]), now)
            except StorageUnavailable:
                raise
            except Exception as alone:
                logger.error(
                    "segments of profile %d cannot be re-evaluated; set aside for an hour: %s",
                    pid,
                    describe(alone),
                )
                store.segments_transaction(partial(_set_aside, profile_id=pid), now)
    return len(due)


def _reevaluate(records: SegmentRecords, due: Sequence[int]) -> None:
    people = records.lock_profiles(due)
    gone = sorted(set(due) - people.keys())  # erased or merged away meanwhile
    accounts = compile_accounts(records.definitions({a for a, _ in people.values()}))
    Evaluation(records, accounts, save_all=True).run(people)
    # People of accounts with no segment left need no timer.
    idle = sorted(pid for pid, (account, _) in people.items() if account not in accounts)
    if gone or idle:
        records.save([], [*gone, *idle], [])


def _set_aside(records: SegmentRecords, profile_id: int) -> None:
    # Reads nothing: the person's records may be what cannot be read.
    records.postpone(profile_id, records.now_ms + SET_ASIDE_MS)


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentLoopsHealth:
    loops: LoopsHealth
    timer_lag_seconds: float | None  # None: the database did not say


def timer_lag(store: SegmentStore, now: int) -> float | None:
    """The timer's lag in seconds; None when the database does not say."""
    try:
        return store.segment_timer_lag(now)
    except Exception:
        return None


class SegmentLoops:
    """The backfill and timer threads of one process."""

    def __init__(
        self,
        store: SegmentStore,
        timer_seconds: float = 1.0,
        retention_ms: int = 30 * 86_400_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._timer_seconds = timer_seconds
        self._retention_ms = retention_ms
        self._clock = clock
        self._stop = threading.Event()
        self._wake_backfill = threading.Event()
        self._threads: list[threading.Thread] = []
        self.backfill_health = FoldHealth()
        self.timer_health = FoldHealth()

    def wake(self) -> None:
        """A segment was saved: the backfill starts at once."""
        self._wake_backfill.set()

    def start(self) -> None:
        for name, target in (("backfill", self._run_backfill), ("timer", self._run_timer)):
            thread = threading.Thread(target=target, name=f"eventfold-segment-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake_backfill.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def loops_health(self) -> LoopsHealth:
        """The backfill's and the timer's health together (reads no database)."""
        return combined_health([self.backfill_health, self.timer_health])

    def health(self) -> SegmentLoopsHealth:
        return SegmentLoopsHealth(self.loops_health(), timer_lag(self._store, self._clock()))

    def _run_backfill(self) -> None:
        self._supervise(self.backfill_health, self._backfill_once)

    def _backfill_once(self) -> None:
        if not backfill_step(self._store):
            self._wake_backfill.wait(self._timer_seconds)
            self._wake_backfill.clear()

    def _run_timer(self) -> None:
        self._supervise(self.timer_health, self._timer_once)

    def _timer_once(self) -> None:
        if timer_step(self._store, self._clock) < TIMER_STEP:
            self._store.sequence_segment_changes(self._clock() - self._retention_ms)
            self._stop.wait(self._timer_seconds)

    def _supervise(self, health: FoldHealth, once: Callable[[], None]) -> None:
        health.running = True
        try:
            while not self._stop.is_set():
                try:
                    once()
                except Exception as error:
                    health.failed(error)
                    logger.warning("segment loop step failed, retrying: %s", describe(error))
                    self._stop.wait(1.0)
                    continue
                health.succeeded()
        finally:
            health.running = False


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Polls ``condition`` until it holds or ``timeout`` seconds pass (tests, bench)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
