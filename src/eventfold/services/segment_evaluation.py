"""Evaluating people against their account's segments, in the caller's transaction:
the one routine the fold, the timer and the backfill share.

For each person it brings the event-leaf states up to date (adding the step's events to
the states it has, building a missing or stale one from the person's folded events),
judges every segment, and records the entries and exits together with the new states
and the next moment a time window can change the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from eventfold.domain.profile import FoldSource, ProfileState
from eventfold.domain.segments.evaluate import (
    LeafState,
    PersonLeaves,
    Verdict,
    leaf_from_events,
    leaf_states,
    merge_leaves,
    resolve,
)
from eventfold.domain.segments.language import (
    AllOf,
    AnyOf,
    Condition,
    DefinitionError,
    EventLeaf,
    NotOf,
    ProfileLeaf,
    event_leaves,
    parse_condition,
)
from eventfold.domain.segments.predicates import Judgement, Predicate, compile_predicate
from eventfold.storage.segment_contract import (
    MembershipChange,
    PersonVerdict,
    SegmentRecord,
    SegmentRecords,
)

logger = logging.getLogger("eventfold.segments")


@dataclass(frozen=True, slots=True)
class CompiledSegment:
    id: int
    key: str
    version: int
    condition: Condition  # with the segments it names inlined
    predicate: Predicate  # the condition compiled
    # What the answer reads: profile fields, and event leaves by fingerprint.
    fields: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()


@dataclass(slots=True)
class AccountSegments:
    segments: list[CompiledSegment] = field(default_factory=list)
    leaves: dict[str, EventLeaf] = field(default_factory=dict)  # fingerprint -> leaf

    def leaves_of(self, segment_id: int) -> set[str]:
        for segment in self.segments:
            if segment.id == segment_id:
                return {leaf.fingerprint for leaf in event_leaves(segment.condition)}
        return set()


_compiled: dict[tuple[tuple[int, int, str, bytes], ...], AccountSegments] = {}
_MAX_COMPILED = 1_000


def compile_accounts(records: Iterable[SegmentRecord]) -> dict[int, AccountSegments]:
    """Each account's segments, parsed and resolved (cached by their versions)."""
    by_account: dict[int, list[SegmentRecord]] = {}
    for record in records:
        by_account.setdefault(record.account_id, []).append(record)
    return {account: _compile(found) for account, found in by_account.items()}


def _compile(records: list[SegmentRecord]) -> AccountSegments:
    cache_key = tuple((r.id, r.version, r.key, r.definition) for r in records)
    cached = _compiled.get(cache_key)
    if cached is not None:
        return cached
    parsed: dict[str, Condition] = {}
    for record in records:
        try:
            parsed[record.key] = parse_condition(msgspec.json.decode(record.definition))
        except (DefinitionError, msgspec.DecodeError) as error:  # saved ones were checked
            logger.error("segment %s cannot be read and is skipped: %s", record.key, error)
    compiled = AccountSegments()
    for record in records:
        if record.key not in parsed:
            continue
        try:
            condition = resolve(parsed[record.key], parsed)
        except KeyError:
            continue  # names a segment being deleted
        compiled.segments.append(
            CompiledSegment(
                record.id,
                record.key,
                record.version,
                condition,
                compile_predicate(condition),
                frozenset(profile_fields(condition)),
                frozenset(leaf.fingerprint for leaf in event_leaves(condition)),
            )
        )
        compiled.leaves.update((leaf.fingerprint, leaf) for leaf in event_leaves(condition))
    if len(_compiled) >= _MAX_COMPILED:
        _compiled.clear()
    _compiled[cache_key] = compiled
    return compiled


@dataclass(slots=True)
class Evaluation:
    """One round of evaluation in one transaction."""

    records: SegmentRecords
    accounts: Mapping[int, AccountSegments]
    # (event, timestamp) folded into each person in this transaction and not yet in
    # their stored leaf states.
    step_events: Mapping[int, Sequence[tuple[FoldSource, int]]] = field(default_factory=dict)
    brand_new: set[int] = field(default_factory=set)  # profiles made by this fold step
    merged: Mapping[int, int] = field(default_factory=dict)  # merged away -> survivor
    rebuild: set[str] = field(default_factory=set)  # leaves to build afresh for everyone
    # Store every verdict (the timer and the backfill), not only those whose leaf states
    # or next change moment may have changed.
    save_all: bool = False
    # Profile fields changed in this transaction by other than events (profile upserts).
    step_fields: Mapping[int, set[str]] = field(default_factory=dict)

    def run(self, people: Mapping[int, tuple[int, ProfileState]]) -> list[MembershipChange]:
        """Evaluates these (profile id -> account, state) and saves; returns the changes."""
        records, now = self.records, self.records.now_ms
        people = {pid: found for pid, found in people.items() if found[0] in self.accounts}
        ids = sorted(set(people) | set(self.merged))
        if not ids:
            return []
        stored = records.leaves(ids)
        members = records.memberships(ids)
        next_changes = {} if self.save_all else records.next_changes(ids)
        leaves: dict[int, PersonLeaves] = {}
        for pid, (account, _) in people.items():
            if pid in self.brand_new:
                leaves[pid] = {fp: LeafState() for fp in self.accounts[account].leaves}
            else:
                leaves[pid] = stored.get(pid, {})
        for dead, survivor in sorted(self.merged.items()):
            if survivor in leaves:
                leaves[survivor] = merge_leaves(leaves[survivor], stored.get(dead, {}))
        stale = {
            pid: (self.accounts[account].leaves.keys() - leaves[pid].keys())
            | (self.rebuild & self.accounts[account].leaves.keys())
            for pid, (account, _) in people.items()
        }
        histories = records.events_of([pid for pid, fps in stale.items() if fps])
        changes: list[MembershipChange] = []
        verdicts: list[PersonVerdict] = []
        for pid, (account, state) in sorted(people.items()):
            segments = self.accounts[account]
            kept = leaves[pid]
            if stale[pid] or not kept.keys() <= segments.leaves.keys():
                kept = {
                    fp: s
                    for fp, s in kept.items()
                    if fp in segments.leaves and fp not in stale[pid]
                }
            step_events = self.step_events.get(pid, ())
            current = leaf_states(kept, segments.leaves, step_events, now)
            for fp in stale[pid]:
                current[fp] = leaf_from_events(segments.leaves[fp], histories[pid], now)
            due = next_changes.get(pid)
            skip = None
            if not (
                self.save_all
                or pid in self.brand_new
                or pid not in stored
                or pid in self.merged.values()
                or (due is not None and due <= now)  # overdue: the timer's turn anyway
            ):
                moved = {fp for fp, s in current.items() if kept.get(fp) is not s}
                changed = fields_changed_by(step_events) | self.step_fields.get(pid, set())
                skip = {
                    s.id
                    for s in segments.segments
                    if not (s.fields & changed or s.fingerprints & moved)
                }
            verdict = judge(
                segments, pid, account, state, current, members.get(pid, {}), now, changes, skip
            )
            if skip and due is not None:
                # A segment not looked at keeps its moment; an earlier one is harmless
                # (the timer then looks at everything again).
                moments = [m for m in (verdict.next_change_ms, due) if m is not None]
                verdict = PersonVerdict(pid, account, current, min(moments))
            if (
                self.save_all
                or pid not in stored
                or verdict.next_change_ms is not None
                or _differs(stored[pid], verdict)
            ):
                verdicts.append(verdict)
        for dead, survivor in sorted(self.merged.items()):
            if survivor not in people:
                continue
            account = people[survivor][0]
            versions = {s.id: s.version for s in self.accounts[account].segments}
            for segment_id in sorted(members.get(dead, {}).keys() & versions.keys()):
                changes.append(
                    MembershipChange(account, segment_id, dead, "exited", now, versions[segment_id])
                )
        records.save(verdicts, sorted(self.merged), changes)
        return changes


def judge(
    segments: AccountSegments,
    profile_id: int,
    account_id: int,
    state: ProfileState,
    leaves: PersonLeaves,
    members: Mapping[int, int],
    now: int,
    changes: list[MembershipChange],
    skip: set[int] | None = None,
) -> PersonVerdict:
    """Judges one person against every segment of the account (but those in ``skip``,
    whose inputs did not change); appends entries and exits to ``changes``. A segment
    whose leaf state is unknown keeps its membership."""
    verdict = Verdict(now)
    judgement = Judgement(state, leaves, verdict)
    for segment in segments.segments:
        if skip and segment.id in skip:
            continue
        result = segment.predicate(judgement)
        if result is None:
            continue
        was = segment.id in members
        if result != was:
            change = "entered" if result else "exited"
            changes.append(
                MembershipChange(account_id, segment.id, profile_id, change, now, segment.version)
            )
    return PersonVerdict(profile_id, account_id, leaves, verdict.next_change)


def fields_changed_by(events: Sequence[tuple[FoldSource, int]]) -> set[str]:
    """The profile fields that folding these events can have changed."""
    if not events:
        return set()
    changed = {"eventCount", "firstSeen", "lastSeen"}
    for event, _ in events:
        if event.email is not None:
            changed.add("email")
        if event.phoneNumber is not None:
            changed.add("phoneNumber")
        if event.locale is not None:
            changed.add("locale")
        if event.tags:
            changed.add("tags")
        if event.custom is not None:
            for kind in ("string", "numeric", "date"):
                changed.update(f"custom.{kind}.{f.key}" for f in getattr(event.custom, kind))
    return changed


def profile_fields(condition: Condition) -> set[str]:
    """The profile fields a (resolved) condition reads."""
    if isinstance(condition, ProfileLeaf):
        return {condition.field}
    if isinstance(condition, AllOf | AnyOf):
        return set().union(*(profile_fields(c) for c in condition.children))
    if isinstance(condition, NotOf):
        return profile_fields(condition.child)
    return set()


def _differs(stored: PersonLeaves, verdict: PersonVerdict) -> bool:
    return stored != verdict.leaves
