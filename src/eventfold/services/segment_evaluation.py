"""Evaluating people against their account's segments, in the caller's transaction:
the one routine the fold, the timer and the backfill share.

For each person it brings the event-leaf states up to date (adding the step's events to
the states it has, building a missing one from the person's folded events), judges
every segment at once (``domain/segments/program.py``), and records the entries and
exits together with the new states and the next moment a time window can change the
answer. All the people of a round are read in one query and written in one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from eventfold.domain.fold_input import FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.language import Condition, DefinitionError, parse_condition
from eventfold.domain.segments.program import (
    PersonLeaves,
    SegmentProgram,
    compile_program,
    fingerprints_of,
    merge_people,
)
from eventfold.storage.segment_contract import (
    MembershipChange,
    PersonVerdict,
    SegmentRecord,
    SegmentRecords,
)

logger = logging.getLogger("eventfold.segments")


@dataclass(frozen=True, slots=True)
class AccountSegments:
    program: SegmentProgram
    versions: Mapping[int, int]  # segment id -> version


_compiled: dict[tuple[tuple[int, int, str, bytes], ...], AccountSegments] = {}
_MAX_COMPILED = 1_000


def compile_accounts(records: Iterable[SegmentRecord]) -> dict[int, AccountSegments]:
    """Each account's segments, compiled (cached by their versions)."""
    by_account: dict[int, list[SegmentRecord]] = {}
    for record in records:
        by_account.setdefault(record.account_id, []).append(record)
    return {account: _compile(found) for account, found in by_account.items()}


def _compile(records: list[SegmentRecord]) -> AccountSegments:
    cache_key = tuple((r.id, r.version, r.key, r.definition) for r in records)
    cached = _compiled.get(cache_key)
    if cached is not None:
        return cached
    parsed: list[tuple[int, str, Condition]] = []
    for record in records:
        try:
            condition = parse_condition(msgspec.json.decode(record.definition))
        except (DefinitionError, msgspec.DecodeError) as error:  # saved ones were checked
            logger.error("segment %s cannot be read and is skipped: %s", record.key, error)
            continue
        parsed.append((record.id, record.key, condition))
    program = compile_program(parsed)
    versions = {r.id: r.version for r in records if r.id in program.bit_of}
    compiled = AccountSegments(program, versions)
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
    # Store every verdict (the timer and the backfill), not only those whose leaf states
    # or next change moment changed.
    save_all: bool = False

    def run(self, people: Mapping[int, tuple[int, ProfileState]]) -> list[MembershipChange]:
        """Evaluates these (profile id -> account, state) and saves; returns the changes."""
        records, now = self.records, self.records.now_ms
        people = {pid: found for pid, found in people.items() if found[0] in self.accounts}
        if not people and not self.merged:
            return []
        # A profile this step made has nothing stored yet: no need to ask.
        ids = sorted((set(people) - self.brand_new) | set(self.merged))
        stored = records.segment_people(ids) if ids else {}
        members = records.memberships(ids) if ids else {}
        leaves: dict[int, PersonLeaves] = {}
        for pid, (account, _) in people.items():
            if pid in self.brand_new:
                leaves[pid] = PersonLeaves(self.accounts[account].program.known, {})
            elif pid in stored:
                leaves[pid] = stored[pid][0]
            else:
                leaves[pid] = PersonLeaves()
        # A survivor's states now hold the merged-away person's: stored whatever else.
        survivors = set(self.merged.values())
        for dead, survivor in sorted(self.merged.items()):
            if survivor in leaves:
                dead_leaves = stored[dead][0] if dead in stored else PersonLeaves()
                leaves[survivor] = merge_people(leaves[survivor], dead_leaves)
        stale: dict[int, set[str]] = {}
        for pid, (account, _) in people.items():
            program = self.accounts[account].program
            if leaves[pid].known != program.known:
                stale[pid] = program.rules.keys() - fingerprints_of(leaves[pid].known)
        histories = records.events_of([pid for pid, fps in stale.items() if fps])
        changes: list[MembershipChange] = []
        verdicts: list[PersonVerdict] = []
        for pid, (account, state) in sorted(people.items()):
            segments = self.accounts[account]
            program = segments.program
            person = leaves[pid]
            states = person.states
            changed = program.cut(states, now)
            if pid in stale:
                changed = True
                missing = stale[pid]
                for fp in missing:
                    states.pop(fp, None)
                program.add_events(states, histories.get(pid, ()), now, only=missing)
                known_before = program.rules.keys() - missing
                program.add_events(states, self.step_events.get(pid, ()), now, only=known_before)
                person = PersonLeaves(program.known, states)
            elif program.add_events(states, self.step_events.get(pid, ()), now):
                changed = True
            bits, next_change = program.judge(states, state, now)
            was = 0
            for segment_id in members.get(pid, ()):
                was |= program.bit_of.get(segment_id, 0)
            _record(changes, program, segments.versions, account, pid, bits ^ was, bits, now)
            if (
                self.save_all
                or changed
                or pid in survivors
                or pid not in stored
                or stored[pid][1] != next_change
            ):
                verdicts.append(PersonVerdict(pid, account, person, next_change))
        for dead, survivor in sorted(self.merged.items()):
            if survivor not in people:
                continue
            account = people[survivor][0]
            versions = self.accounts[account].versions
            for segment_id in sorted(members.get(dead, {}).keys() & versions.keys()):
                changes.append(
                    MembershipChange(account, segment_id, dead, "exited", now, versions[segment_id])
                )
        records.save(verdicts, sorted(self.merged), changes)
        return changes


def _record(
    changes: list[MembershipChange],
    program: SegmentProgram,
    versions: Mapping[int, int],
    account: int,
    profile_id: int,
    flipped: int,
    bits: int,
    now: int,
) -> None:
    """Appends an entry or exit for each segment whose bit ``flipped``."""
    while flipped:
        lowest = flipped & -flipped
        flipped ^= lowest
        segment_id = program.segment_ids[lowest.bit_length() - 1]
        change = "entered" if bits & lowest else "exited"
        changes.append(
            MembershipChange(account, segment_id, profile_id, change, now, versions[segment_id])
        )
