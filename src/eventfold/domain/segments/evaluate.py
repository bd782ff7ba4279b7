"""Whether a person is in a segment at a moment, and the next moment that can change
with no new event.

A person is judged from their profile (``ProfileState``), the state of each event leaf
(``LeafState``: kept incrementally by ``program.SegmentProgram``, or built from all
their events by ``leaf_from_events``), and ``now``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from eventfold.domain.fold_input import FoldSource
from eventfold.domain.moments import to_epoch_ms
from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.language import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventLeaf,
    NotOf,
    SegmentLeaf,
)


class LeafState(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """What one event leaf needs of a person's events: their count and sum (all-time
    leaves), or each match's (timestamp, amount) still inside the window."""

    count: int = 0
    total: int = 0  # sums in millionths, so that adding in any order gives one answer
    recent: list[tuple[int, int]] = []


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


# --- event leaves --------------------------------------------------------------------


def leaf_from_events(
    leaf: EventLeaf, events: Iterable[tuple[FoldSource, int]], now: int
) -> LeafState:
    """The leaf's state built from all the person's events (from scratch)."""
    matched = [
        (at, event_amount(leaf, event)) for event, at in events if event_matches(leaf, event)
    ]
    if leaf.window_ms is None:
        return LeafState(len(matched), sum(amount for _, amount in matched))
    start = now - leaf.window_ms
    return LeafState(recent=sorted(m for m in matched if m[0] >= start))


_filters: dict[str, tuple[tuple[str, Callable[[list[Any]], bool]], ...]] = {}


def event_matches(leaf: EventLeaf, event: FoldSource) -> bool:
    if leaf.action is not None and event.action != leaf.action:
        return False
    if not leaf.where:
        return True
    filters = _filters.get(leaf.fingerprint)
    if filters is None:
        filters = _filters[leaf.fingerprint] = tuple(
            (f.field, values_check(f.test)) for f in leaf.where
        )
    return all(check(event_values(event, name)) for name, check in filters)


def event_amount(leaf: EventLeaf, event: FoldSource) -> int:
    if leaf.sum_field is None:
        return 0
    return sum(_millionths(v) for v in event_values(event, leaf.sum_field))


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


def event_values(event: FoldSource, name: str) -> list[Any]:
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

_ORDERS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "before": operator.lt,
    "after": operator.gt,
}


def value_check(test: Comparison) -> Callable[[Any], bool]:
    """A test of one value (not ``exists``, ``within`` or ``notWithin``)."""
    op, expected = test.op, test.value
    if op in _ORDERS:
        order = _ORDERS[op]
        return lambda value: bool(order(value, expected))
    if op == "between":
        low, high = expected
        return lambda value: bool(low <= value <= high)
    if op == "in":
        return lambda value: value in expected
    if op == "has":
        return lambda value: bool(value == expected)
    if op == "contains":
        return lambda value: isinstance(value, str) and expected in value
    if op == "startsWith":
        return lambda value: isinstance(value, str) and value.startswith(expected)
    raise ValueError(f"operator {op} has no value test")


def values_check(test: Comparison) -> Callable[[list[Any]], bool]:
    """A test of a field's values that needs no clock: ``exists``, or any value passes."""
    if test.op == "exists":
        wanted = bool(test.value)
        return lambda values: bool(values) is wanted
    check = value_check(test)
    return lambda values: any(check(value) for value in values)


def _millionths(value: float) -> int:
    return round(value * 1_000_000)
