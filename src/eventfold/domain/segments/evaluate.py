"""Whether a person is in a segment at a moment, and the next moment that can change
with no new event.

A person is judged from their profile (``ProfileState``), the state of each event leaf
(``LeafState``: kept incrementally by ``leaf_states``, or built from all their events),
and ``now``. Every leaf is visited (no short cut), so the next moment any time-bound
leaf can flip is always known: that is the moment the timer looks at the person again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from eventfold.domain.moments import to_epoch_ms
from eventfold.domain.profile import FoldInput, ProfileState
from eventfold.domain.segments.language import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventLeaf,
    NotOf,
    ProfileLeaf,
    SegmentLeaf,
)


class LeafState(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one event leaf needs of a person's events: their count and sum (all-time
    leaves), or each match's (timestamp, amount) still inside the window."""

    count: int = 0
    total: int = 0  # sums in millionths, so that adding in any order gives one answer
    recent: list[tuple[int, int]] = []


PersonLeaves = dict[str, LeafState]  # leaf fingerprint -> state; absent: not known yet


class Verdict:
    """One evaluation's running result: the earliest moment a time-bound leaf changes."""

    __slots__ = ("next_change", "now")

    def __init__(self, now: int) -> None:
        self.now = now
        self.next_change: int | None = None

    def change_at(self, moment: int) -> None:
        if moment > self.now and (self.next_change is None or moment < self.next_change):
            self.next_change = moment


def resolve(condition: Condition, definitions: Mapping[str, Condition]) -> Condition:
    """``condition`` with each segment leaf replaced by that segment's condition (the
    definitions have no cycles: checked when they are saved)."""
    if isinstance(condition, SegmentLeaf):
        return resolve(definitions[condition.key], definitions)
    if isinstance(condition, AllOf):
        return AllOf(tuple(resolve(c, definitions) for c in condition.children))
    if isinstance(condition, AnyOf):
        return AnyOf(tuple(resolve(c, definitions) for c in condition.children))
    if isinstance(condition, NotOf):
        return NotOf(resolve(condition.child, definitions))
    return condition


def is_member(
    condition: Condition, state: ProfileState, leaves: Mapping[str, LeafState], verdict: Verdict
) -> bool | None:
    """Whether the person matches the (resolved) condition; None when an event leaf's
    state is not known for them yet (a backfill is on its way)."""
    if isinstance(condition, AllOf | AnyOf):
        results = [is_member(c, state, leaves, verdict) for c in condition.children]
        if any(result is None for result in results):
            return None
        return all(results) if isinstance(condition, AllOf) else any(results)
    if isinstance(condition, NotOf):
        inner = is_member(condition.child, state, leaves, verdict)
        return None if inner is None else not inner
    if isinstance(condition, ProfileLeaf):
        return _test_values(condition.test, profile_values(state, condition.field), verdict)
    if isinstance(condition, EventLeaf):
        leaf_state = leaves.get(condition.fingerprint)
        if leaf_state is None:
            return None
        return _test_leaf(condition, leaf_state, verdict)
    raise TypeError(f"unresolved segment leaf {condition!r}")


# --- event leaves --------------------------------------------------------------------


def leaf_states(
    leaves: PersonLeaves,
    definitions: Mapping[str, EventLeaf],
    events: Iterable[tuple[FoldInput, int]],
    now: int,
) -> PersonLeaves:
    """``leaves`` with these (event, timestamp) added to each known leaf, and windows
    cut to ``now`` (what fell out of a window can never count again)."""
    updated = {fp: LeafState(s.count, s.total, list(s.recent)) for fp, s in leaves.items()}
    events = list(events)
    for fp, state in updated.items():
        leaf = definitions.get(fp)
        if leaf is None:
            continue
        for event, at in events:
            if event_matches(leaf, event):
                amount = event_amount(leaf, event)
                if leaf.window_ms is None:
                    state.count += 1
                    state.total += amount
                else:
                    state.recent.append((at, amount))
        if leaf.window_ms is not None:
            state.recent = sorted(e for e in state.recent if e[0] >= now - leaf.window_ms)
    return updated


def merge_leaves(a: PersonLeaves, b: PersonLeaves) -> PersonLeaves:
    """The leaves of two people merged into one: known only where known for both."""
    return {
        fp: LeafState(
            a[fp].count + b[fp].count,
            a[fp].total + b[fp].total,
            sorted(a[fp].recent + b[fp].recent),
        )
        for fp in a.keys() & b.keys()
    }


def leaf_from_events(
    leaf: EventLeaf, events: Iterable[tuple[FoldInput, int]], now: int
) -> LeafState:
    """The leaf's state built from all the person's events."""
    return leaf_states({leaf.fingerprint: LeafState()}, {leaf.fingerprint: leaf}, events, now)[
        leaf.fingerprint
    ]


def event_matches(leaf: EventLeaf, event: FoldInput) -> bool:
    if leaf.action is not None and event.action != leaf.action:
        return False
    return all(_test_values(f.test, event_values(event, f.field), None) for f in leaf.where)


def event_amount(leaf: EventLeaf, event: FoldInput) -> int:
    if leaf.sum_field is None:
        return 0
    return sum(_millionths(v) for v in event_values(event, leaf.sum_field))


def _test_leaf(leaf: EventLeaf, state: LeafState, verdict: Verdict) -> bool:
    if leaf.window_ms is None:
        count, total = state.count, state.total
    else:
        now, start = verdict.now, verdict.now - leaf.window_ms
        inside = [(at, amount) for at, amount in state.recent if start <= at <= now]
        count, total = len(inside), sum(amount for _, amount in inside)
        for at, _ in state.recent:
            verdict.change_at(at)  # a future-stamped event enters the window
            verdict.change_at(at + leaf.window_ms + 1)  # and leaves it
    if leaf.sum_field is None:
        return _compare(leaf.test, count)
    return _compare_millionths(leaf.test, total)


# --- fields --------------------------------------------------------------------------


def profile_values(state: ProfileState, name: str) -> list[Any]:
    """The values of a profile field (a multi-valued field matches when any does)."""
    if name == "email":
        return list(state.emails)
    if name == "phoneNumber":
        return list(state.phone_numbers)
    if name == "locale":
        return [state.locale.value] if state.locale is not None else []
    if name == "tags":
        return list(state.tags)
    if name == "eventCount":
        return [state.event_count]
    if name == "firstSeen":
        return [state.first_seen] if state.first_seen is not None else []
    if name == "lastSeen":
        return [state.last_seen] if state.last_seen is not None else []
    _, kind, key = name.split(".", 2)
    stamped = state.custom.get(f"{kind}:{key}")
    return _typed(kind, stamped.value) if stamped is not None else []


def event_values(event: FoldInput, name: str) -> list[Any]:
    if name == "email":
        return [event.email] if event.email is not None else []
    if name == "phoneNumber":
        return [event.phoneNumber] if event.phoneNumber is not None else []
    if name == "locale":
        return [event.locale] if event.locale is not None else []
    if name == "tags":
        return list(event.tags)
    if name == "products.id":
        return [str(p.id) for p in event.products]
    _, kind, key = name.split(".", 2)
    if event.custom is None:
        return []
    for custom_field in getattr(event.custom, kind):
        if custom_field.key == key:
            return _typed(kind, custom_field.values)
    return []


def _typed(kind: str, values: list[Any]) -> list[Any]:
    if kind == "date":
        return [m for m in (_date_ms(v) for v in values) if m is not None]
    if kind == "numeric":
        return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return [v for v in values if isinstance(v, str)]


@lru_cache(maxsize=65_536)
def _date_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return to_epoch_ms(msgspec.convert(value, datetime))
    except msgspec.ValidationError:
        return None


# --- comparisons ---------------------------------------------------------------------


def _test_values(test: Comparison, values: list[Any], verdict: Verdict | None) -> bool:
    op, expected = test.op, test.value
    if op == "exists":
        return bool(values) == bool(expected)
    if op in ("within", "notWithin"):
        assert verdict is not None  # never inside an event's where (see language)
        now, found = verdict.now, False
        for value in values:
            verdict.change_at(value)
            verdict.change_at(value + expected + 1)
            inside = now - expected <= value <= now
            found = found or (inside if op == "within" else not inside)
        return found
    return any(_compare_one(op, expected, value) for value in values)


def _compare_one(op: str, expected: Any, value: Any) -> bool:
    if op in ("eq", "ne", "gt", "gte", "lt", "lte", "between"):
        return _compare(Comparison(op, expected), value)
    if op == "in":
        return bool(value in expected)
    if op == "has":
        return bool(value == expected)
    if op == "contains":
        return bool(expected in value) if isinstance(value, str) else bool(value == expected)
    if op == "startsWith":
        return isinstance(value, str) and value.startswith(expected)
    if op == "before":
        return bool(value < expected)
    if op == "after":
        return bool(value > expected)
    raise ValueError(f"unknown operator {op}")


def _compare(test: Comparison, value: Any) -> bool:
    op, expected = test.op, test.value
    if op == "eq":
        return bool(value == expected)
    if op == "ne":
        return bool(value != expected)
    if op == "gt":
        return bool(value > expected)
    if op == "gte":
        return bool(value >= expected)
    if op == "lt":
        return bool(value < expected)
    if op == "lte":
        return bool(value <= expected)
    low, high = expected
    return bool(low <= value <= high)


def _compare_millionths(test: Comparison, total: int) -> bool:
    expected = test.value
    converted = (
        (_millionths(expected[0]), _millionths(expected[1]))
        if isinstance(expected, tuple)
        else _millionths(expected)
    )
    return _compare(Comparison(test.op, converted), total)


def _millionths(value: float) -> int:
    return round(value * 1_000_000)
