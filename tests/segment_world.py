"""An in-memory account for segment tests: profiles folded by the real ``ProfileBook``,
segments judged by the real fold hook, timer and backfill, over a fake of storage's
``SegmentRecords`` (a fake, not a mock: it keeps what it is given)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from eventfold.domain.events import AcceptedEvent
from eventfold.domain.fold_input import FoldInput, FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.domain.profile_book import IdentityKey, ProfileBook
from eventfold.domain.segments.evaluate import Verdict, leaf_from_events, resolve
from eventfold.domain.segments.language import Condition, event_leaves, parse_condition
from eventfold.domain.segments.predicates import is_member
from eventfold.domain.segments.program import PersonLeaves
from eventfold.services.segments_fold import fold_segments
from eventfold.storage.base import PendingEvent
from eventfold.storage.segment_contract import (
    FeedEntry,
    Member,
    MembershipChange,
    PersonVerdict,
    SegmentRecord,
    SegmentRecords,
)

T = TypeVar("T")
ACCOUNT = 1


class World:
    """One account's profiles, events and segment records, in memory."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.identities: dict[IdentityKey, int] = {}
        self.states: dict[int, ProfileState] = {}
        self.events: list[tuple[int, FoldSource, int]] = []  # (profile, event, at)
        self.segments: list[SegmentRecord] = []
        self.leaves: dict[int, PersonLeaves] = {}
        self.next_change: dict[int, int | None] = {}
        self.members: dict[int, dict[int, int]] = {}
        self.changes: list[MembershipChange] = []
        self.last_id = 0
        self.seq = 0

    # --- what the service layer does with storage ---------------------------------------

    def fold(self, events: Sequence[tuple[FoldInput, int]]) -> None:
        """One fold step over these (event, timestamp), like ``fold_claimed``."""
        book = ProfileBook(
            dict(self.identities),
            {pid: (ACCOUNT, state) for pid, state in self.states.items()},
            self._allocate,
        )
        pending = []
        for event, at in events:
            self.seq += 1
            pending.append(
                (
                    book.fold(ACCOUNT, event, at, self.seq),
                    PendingEvent(
                        self.seq,
                        ACCOUNT,
                        at,
                        AcceptedEvent(at, event.action, None, None, None, b"{}"),
                        event,
                    ),
                )
            )
        book.settle()
        for dead in book.merged_into:
            self.states.pop(dead, None)
        self.identities.update(book.identities)
        for pid in book.touched:
            self.states[pid] = book.states[pid]
        self.events = [(book.final_id(pid), ev, at) for pid, ev, at in self.events]
        self.events += [
            (book.final_id(pid), p.event, p.accepted.occurred_at_ms) for pid, p in pending
        ]
        fold_segments(_Tx(self), book, [(book.final_id(pid), p) for pid, p in pending])

    def erase(self, identifier: IdentityKey) -> None:
        """Erasure: the person's profile, events and segment state go; exits recorded."""
        pid = self.identities.get(identifier)
        if pid is None:
            return
        self.identities = {k: v for k, v in self.identities.items() if v != pid}
        self.states.pop(pid)
        self.events = [e for e in self.events if e[0] != pid]
        for sid in self.members.pop(pid, {}):
            self.changes.append(MembershipChange(ACCOUNT, sid, pid, "exited", self.now, 1))
        self.leaves.pop(pid, None)
        self.next_change.pop(pid, None)

    def define(self, key: str, match: Any) -> None:
        record = SegmentRecord(
            len(self.segments) + 1,
            ACCOUNT,
            key,
            key,
            msgspec.json.encode(match),
            1,
            "preparing",
            self.now,
            self.now,
        )
        self.segments.append(record)

    def segments_transaction(
        self, job: Callable[[SegmentRecords], T], now_ms: int | None = None
    ) -> T:
        return job(MemoryRecords(self, now_ms or self.now))

    def segment_timer_lag(self, now_ms: int) -> float:
        due = [m for m in self.next_change.values() if m is not None and m <= now_ms]
        return (now_ms - min(due)) / 1000 if due else 0.0

    def sequence_segment_changes(self, forget_before_ms: int) -> None:
        pass  # the world's changes are a list in commit order already

    # Reads for the API, which these tests do not use.
    def list_segments(self, account_id: int) -> list[tuple[SegmentRecord, int]]:
        raise NotImplementedError

    def segment_members(self, segment_id: int, after: int, limit: int) -> list[Member]:
        raise NotImplementedError

    def segment_changes(self, segment_id: int, after: int, limit: int) -> list[FeedEntry]:
        raise NotImplementedError

    def profile_segments(self, profile_id: int) -> list[str]:
        raise NotImplementedError

    def account_changes(
        self, account_id: int, after: int, limit: int
    ) -> list[tuple[int, str, int, str, int]]:
        raise NotImplementedError

    def last_segment_change(self) -> int:
        raise NotImplementedError

    # --- the answer from scratch --------------------------------------------------------

    def conditions(self) -> dict[int, Condition]:
        parsed = {r.key: parse_condition(msgspec.json.decode(r.definition)) for r in self.segments}
        return {r.id: resolve(parsed[r.key], parsed) for r in self.segments}

    def from_scratch(self, pid: int, condition: Condition) -> bool:
        history = [(ev, at) for owner, ev, at in self.events if owner == pid]
        leaves = {
            leaf.fingerprint: leaf_from_events(leaf, history, self.now)
            for leaf in event_leaves(condition)
        }
        result = is_member(condition, self.states[pid], leaves, Verdict(self.now))
        assert result is not None
        return result

    def _allocate(self) -> int:
        self.last_id += 1
        return self.last_id


class _Tx:
    def __init__(self, world: World) -> None:
        self._world = world

    def segment_records(self) -> SegmentRecords:
        return MemoryRecords(self._world, self._world.now)


class MemoryRecords:
    """``SegmentRecords`` over a ``World``."""

    def __init__(self, world: World, now_ms: int) -> None:
        self.world = world
        self.now_ms = now_ms

    def definitions(self, account_ids: Iterable[int]) -> list[SegmentRecord]:
        return list(self.world.segments)

    def segment_for_update(self, account_id: int, key: str) -> SegmentRecord | None:
        return next((r for r in self.world.segments if r.key == key), None)

    def insert_segment(self, record: SegmentRecord) -> int:
        raise NotImplementedError

    def update_segment(self, record: SegmentRecord) -> None:
        self.world.segments = [record if r.id == record.id else r for r in self.world.segments]

    def delete_segment(self, segment_id: int) -> None:
        raise NotImplementedError

    def preparing_segment(self) -> SegmentRecord | None:
        return next((r for r in self.world.segments if r.status == "preparing"), None)

    def profiles_after(self, account_id: int, after: int, limit: int) -> dict[int, ProfileState]:
        ids = sorted(pid for pid in self.world.states if pid > after)[:limit]
        return {pid: self.world.states[pid] for pid in ids}

    def profile_ids_after(self, account_id: int, after: int, limit: int) -> list[int]:
        return list(self.profiles_after(account_id, after, limit))

    def lock_profiles(self, profile_ids: Sequence[int]) -> dict[int, tuple[int, ProfileState]]:
        return {
            pid: (ACCOUNT, self.world.states[pid])
            for pid in profile_ids
            if pid in self.world.states
        }

    def events_of(self, profile_ids: Sequence[int]) -> dict[int, list[tuple[FoldSource, int]]]:
        return {
            pid: [(ev, at) for owner, ev, at in self.world.events if owner == pid]
            for pid in profile_ids
        }

    def segment_people(
        self, profile_ids: Sequence[int]
    ) -> dict[int, tuple[PersonLeaves, int | None]]:
        # A copy, as a database gives: what the caller changes stays its own until saved.
        return {
            pid: (_copied(self.world.leaves[pid]), self.world.next_change[pid])
            for pid in profile_ids
            if pid in self.world.leaves
        }

    def memberships(self, profile_ids: Sequence[int]) -> dict[int, dict[int, int]]:
        return {
            pid: dict(self.world.members[pid]) for pid in profile_ids if pid in self.world.members
        }

    def due_people(self, now_ms: int, limit: int) -> list[int]:
        due = [
            (m, pid) for pid, m in self.world.next_change.items() if m is not None and m <= now_ms
        ]
        return [pid for _, pid in sorted(due)[:limit]]

    def postpone(self, profile_id: int, until_ms: int) -> None:
        moment = self.world.next_change.get(profile_id)
        if moment is not None and moment <= self.now_ms:
            self.world.next_change[profile_id] = until_ms

    def save(
        self,
        verdicts: Sequence[PersonVerdict],
        forget: Sequence[int],
        changes: Sequence[MembershipChange],
    ) -> None:
        world = self.world
        for pid in forget:
            world.leaves.pop(pid, None)
            world.next_change.pop(pid, None)
        for verdict in verdicts:
            world.leaves[verdict.profile_id] = verdict.leaves
            world.next_change[verdict.profile_id] = verdict.next_change_ms
        for change in changes:
            members = world.members.setdefault(change.profile_id, {})
            if change.change == "entered":
                members[change.segment_id] = change.at_ms
            else:
                members.pop(change.segment_id, None)
        for pid in forget:
            world.members.pop(pid, None)
        world.changes += changes


def _copied(leaves: PersonLeaves) -> PersonLeaves:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(leaves), type=PersonLeaves)


def replace_status(record: SegmentRecord, status: str) -> SegmentRecord:
    return dataclasses.replace(record, status=status)
