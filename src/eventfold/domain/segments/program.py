"""An account's segments compiled into one program: what the fold, the timer and the
backfill run for every person they judge.

Measured with 50 segments (docs/performance.md, "Segments"): judging a person segment
by segment through closures, and updating every event-leaf state for every event, cost
about 180 µs of Python per folded event. The program does the same work with fewer
calls and touches only what an event can change:

- each distinct event leaf (segments asking the same question share it, by fingerprint)
  is a ``LeafRule``, filed under the action it filters on, so an event updates only the
  leaves of its action;
- a person's states are sparse (``PersonLeaves``): an empty state is not stored, and
  ``known`` says which leaves the states are complete for;
- every segment's condition is one line of one generated function, over the figures
  worked out once per person; its answer is a bit set of the segments the person is in.

The answer is the plain evaluator's (``predicates.is_member``, which the property test
uses from scratch), with one difference: the next change moment is taken from every
time-bound leaf, not only those the short cuts reached, so it can come earlier (the
timer then finds nothing to change), never later.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from eventfold.domain.fold_input import FoldSource
from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.evaluate import (
    LeafState,
    event_values,
    profile_values,
    values_check,
)
from eventfold.domain.segments.language import (
    AllOf,
    AnyOf,
    Condition,
    EventLeaf,
    NotOf,
    ProfileLeaf,
    SegmentLeaf,
    event_leaves,
)


class PersonLeaves(msgspec.Struct, array_like=True, gc=False):
    """A person's event-leaf states: ``known`` holds the (8-byte) fingerprints of the
    leaves they are complete for, sorted; ``states`` only the non-empty ones (a known
    leaf with no state has no matching event in its window)."""

    known: bytes = b""
    states: dict[str, LeafState] = {}


def known_of(fingerprints: Iterable[str]) -> bytes:
    """The ``known`` field for these leaf fingerprints (16 hex digits each)."""
    return b"".join(sorted(bytes.fromhex(fp) for fp in fingerprints))


def fingerprints_of(known: bytes) -> set[str]:
    """The leaf fingerprints a ``known`` field names."""
    return {known[start : start + 8].hex() for start in range(0, len(known), 8)}


def merge_people(a: PersonLeaves, b: PersonLeaves) -> PersonLeaves:
    """The leaves of two people merged into one: known only where known for both."""
    both = fingerprints_of(a.known) & fingerprints_of(b.known)
    states: dict[str, LeafState] = {}
    empty = LeafState()
    for fp in both:
        x, y = a.states.get(fp, empty), b.states.get(fp, empty)
        merged = LeafState(x.count + y.count, x.total + y.total, sorted(x.recent + y.recent))
        if merged != empty:
            states[fp] = merged
    return PersonLeaves(known_of(both), states)


@dataclass(frozen=True, slots=True)
class LeafRule:
    """How one event leaf's state follows a person's events."""

    fingerprint: str
    index: int  # in the program's figures
    window_ms: int | None  # None: all time
    leaf: EventLeaf
    # Each filter of ``where`` as (event field, test of its values).
    filters: tuple[tuple[str, Callable[[list[Any]], bool]], ...] = ()


Decide = Callable[[list[int], list[int], list[list[Any]], list[bool]], int]


@dataclass(frozen=True, slots=True)
class SegmentProgram:
    """One account's segments, compiled; bit ``j`` of an answer is ``segment_ids[j]``."""

    segment_ids: tuple[int, ...]
    bit_of: Mapping[int, int]  # segment id -> its bit (1 << j)
    rules: Mapping[str, LeafRule]  # fingerprint -> rule
    by_action: Mapping[str | None, tuple[LeafRule, ...]]  # None: rules for any action
    known: bytes  # every rule's fingerprint
    profile_fields: tuple[str, ...]
    profile_windows: tuple[tuple[int, int, bool], ...]  # (field index, window, inside)
    decide: Decide

    def add_events(
        self,
        states: dict[str, LeafState],
        events: Iterable[tuple[FoldSource, int]],
        now: int,
        only: set[str] | None = None,
    ) -> bool:
        """Adds these (event, timestamp) to ``states`` in place (to the leaves in
        ``only``, when given); whether any state changed. An event already outside a
        window is left out: it can never count again."""
        changed = False
        everywhere = self.by_action.get(None, ())
        for event, at in events:
            rules = self.by_action.get(event.action, everywhere)
            values: dict[str, list[Any]] = {}  # the event's fields the filters read
            for rule in rules:
                if only is not None and rule.fingerprint not in only:
                    continue
                if rule.filters and not _passes(rule.filters, event, values):
                    continue
                amount = 0
                summed = rule.leaf.sum_field
                if summed is not None:
                    found = values.get(summed)
                    if found is None:
                        found = values[summed] = event_values(event, summed)
                    amount = sum([round(value * 1_000_000) for value in found])
                window, fp = rule.window_ms, rule.fingerprint
                state = states.get(fp)
                if window is None:
                    if state is None:
                        states[fp] = LeafState(1, amount)
                    else:
                        state.count += 1
                        state.total += amount
                elif at >= now - window:
                    if state is None:
                        states[fp] = LeafState(recent=[(at, amount)])
                    else:
                        insort(state.recent, (at, amount))
                else:
                    continue
                changed = True
        return changed

    def cut(self, states: dict[str, LeafState], now: int) -> bool:
        """Drops from ``states`` what fell out of a window (and states of leaves this
        program has not); whether anything went."""
        gone = []
        cut = False
        for fp, state in states.items():
            rule = self.rules.get(fp)
            if rule is None:
                gone.append(fp)
                continue
            window = rule.window_ms
            if window is None or not state.recent or state.recent[0][0] >= now - window:
                continue
            keep = bisect_left(state.recent, now - window, key=_moment)
            if keep == len(state.recent):
                gone.append(fp)
            else:
                state.recent = state.recent[keep:]
                cut = True
        for fp in gone:
            del states[fp]
        return cut or bool(gone)

    def judge(
        self, states: Mapping[str, LeafState], profile: ProfileState, now: int
    ) -> tuple[int, int | None]:
        """The segments the person is in (bits) and the next moment a time-bound leaf
        can change that with no new event (None: never)."""
        size = len(self.rules)
        counts, totals = [0] * size, [0] * size
        soonest: int | None = None
        for fp, state in states.items():
            rule = self.rules[fp]
            window = rule.window_ms
            if window is None:
                counts[rule.index], totals[rule.index] = state.count, state.total
                continue
            recent = state.recent
            low = bisect_left(recent, now - window, key=_moment)
            high = bisect_right(recent, now, key=_moment)
            if low < high:
                moment = recent[low][0] + window + 1  # the oldest inside leaves first
                if soonest is None or moment < soonest:
                    soonest = moment
                counts[rule.index] = high - low
                totals[rule.index] = sum([amount for _, amount in recent[low:high]])
            if high < len(recent):
                moment = recent[high][0]  # the next future-stamped one comes in
                if soonest is None or moment < soonest:
                    soonest = moment
        values = [profile_values(profile, name) for name in self.profile_fields]
        inside: list[bool] = []
        for field, window, wanted in self.profile_windows:
            found = False
            for moment in values[field]:
                for change in (moment, moment + window + 1):
                    if change > now and (soonest is None or change < soonest):
                        soonest = change
                if (now - window <= moment <= now) is wanted:
                    found = True
            inside.append(found)
        return self.decide(counts, totals, values, inside), soonest


def _moment(entry: tuple[int, int]) -> int:
    return entry[0]


def _passes(
    filters: Iterable[tuple[str, Callable[[list[Any]], bool]]],
    event: FoldSource,
    values: dict[str, list[Any]],
) -> bool:
    for name, check in filters:
        found = values.get(name)
        if found is None:
            found = values[name] = event_values(event, name)
        if not check(found):
            return False
    return True


# --- compiling -----------------------------------------------------------------------

_OPERATORS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def compile_program(segments: Sequence[tuple[int, str, Condition]]) -> SegmentProgram:
    """The program of an account's (segment id, key, condition as parsed) in id order.
    A segment naming one that is not among them (being deleted) is left out, and so is
    one in a cycle (refused when saved)."""
    conditions = {key: condition for _, key, condition in segments}
    ordered = _in_dependency_order(conditions)
    ids = {key: sid for sid, key, _ in segments}
    rules: dict[str, LeafRule] = {}
    for key in ordered:
        for leaf in event_leaves(conditions[key]):
            if leaf.fingerprint not in rules:
                window = leaf.window_ms
                filters = tuple((f.field, values_check(f.test)) for f in leaf.where)
                rules[leaf.fingerprint] = LeafRule(
                    leaf.fingerprint, len(rules), window, leaf, filters
                )
    writer = _Writer(rules, {key: index for index, key in enumerate(ordered)})
    lines = [writer.line(index, conditions[key]) for index, key in enumerate(ordered)]
    by_action: dict[str | None, list[LeafRule]] = {}
    everywhere = [rule for rule in rules.values() if rule.leaf.action is None]
    for rule in rules.values():
        if rule.leaf.action is not None:
            by_action.setdefault(rule.leaf.action, list(everywhere)).append(rule)
    by_action[None] = everywhere
    return SegmentProgram(
        segment_ids=tuple(ids[key] for key in ordered),
        bit_of={ids[key]: 1 << index for index, key in enumerate(ordered)},
        rules=rules,
        by_action={action: tuple(found) for action, found in by_action.items()},
        known=known_of(rules),
        profile_fields=tuple(writer.fields),
        profile_windows=tuple(writer.windows),
        decide=_function(lines, writer.constants),
    )


def _in_dependency_order(conditions: Mapping[str, Condition]) -> list[str]:
    """Keys ordered so that a segment comes after those it names; keys naming a missing
    segment, or in a cycle, left out."""
    ordered: list[str] = []
    state: dict[str, str] = {}  # key -> "visiting", "done" or "out"

    def visit(key: str) -> bool:
        if state.get(key) == "done":
            return True
        if key not in conditions or state.get(key) in ("visiting", "out"):
            return False
        state[key] = "visiting"
        fine = all(visit(name) for name in sorted(_named(conditions[key])))
        state[key] = "done" if fine else "out"
        if fine:
            ordered.append(key)
        return fine

    for key in conditions:  # in the caller's order (segment ids) where nothing is named
        visit(key)
    return ordered


def _named(condition: Condition) -> set[str]:
    if isinstance(condition, SegmentLeaf):
        return {condition.key}
    if isinstance(condition, AllOf | AnyOf):
        return set().union(*(_named(child) for child in condition.children))
    if isinstance(condition, NotOf):
        return _named(condition.child)
    return set()


class _Writer:
    """Writes each condition as a Python expression. Values from definitions never go
    into the source: they are constants ``k0, k1, ...`` the function is given."""

    def __init__(self, rules: Mapping[str, LeafRule], order: Mapping[str, int]) -> None:
        self.rules = rules
        self.order = order
        self.constants: list[Any] = []
        self.fields: list[str] = []
        self.windows: list[tuple[int, int, bool]] = []

    def line(self, index: int, condition: Condition) -> str:
        return f"    if {self.expression(condition)}: bits |= {1 << index}"

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"k{len(self.constants) - 1}"

    def field(self, name: str) -> int:
        if name not in self.fields:
            self.fields.append(name)
        return self.fields.index(name)

    def expression(self, condition: Condition) -> str:
        if isinstance(condition, AllOf | AnyOf):
            joiner = " and " if isinstance(condition, AllOf) else " or "
            return "(" + joiner.join(self.expression(c) for c in condition.children) + ")"
        if isinstance(condition, NotOf):
            return f"(not {self.expression(condition.child)})"
        if isinstance(condition, SegmentLeaf):
            return f"(bits >> {self.order[condition.key]} & 1 == 1)"
        if isinstance(condition, ProfileLeaf):
            field = self.field(condition.field)
            test = condition.test
            if test.op in ("within", "notWithin"):
                window = (field, int(test.value), test.op == "within")
                if window not in self.windows:
                    self.windows.append(window)
                return f"inside[{self.windows.index(window)}]"
            if test.op == "eq" or test.op == "has":  # any value equal
                return f"({self.constant(test.value)} in values[{field}])"
            if condition.field == "eventCount" and test.op in _OPERATORS:  # always one value
                figure = f"values[{field}][0]"
                return f"({figure} {_OPERATORS[test.op]} {self.constant(test.value)})"
            return f"{self.constant(values_check(test))}(values[{field}])"
        return self.event_leaf(condition)

    def event_leaf(self, leaf: EventLeaf) -> str:
        index = self.rules[leaf.fingerprint].index
        figure = f"totals[{index}]" if leaf.sum_field is not None else f"counts[{index}]"
        test = leaf.test
        scale = leaf.sum_field is not None  # sums are kept in millionths
        if test.op == "between":
            low, high = (_scaled(v, scale) for v in test.value)
            return f"({self.constant(low)} <= {figure} <= {self.constant(high)})"
        return f"({figure} {_OPERATORS[test.op]} {self.constant(_scaled(test.value, scale))})"


def _scaled(value: Any, millionths: bool) -> Any:
    return round(value * 1_000_000) if millionths else value


def _function(lines: list[str], constants: list[Any]) -> Decide:
    source = "\n".join(
        ["def decide(counts, totals, values, inside):", "    bits = 0", *lines, "    return bits"]
    )
    namespace: dict[str, Any] = {f"k{index}": value for index, value in enumerate(constants)}
    exec(compile(source, "<segments>", "exec"), namespace)  # noqa: S102 (no values in source)
    decide: Decide = namespace["decide"]
    return decide
