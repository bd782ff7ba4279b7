"""Conditions compiled into Python closures: what the fold runs for every person it
touches and every segment of their account (measured: the tree walked node by node
took 6 of the fold's 10 s with 50 segments; see docs/performance.md).

Evaluation short-cuts ``all`` and ``any``, and records the next moment only of the
leaves it evaluated: the answer depends on nothing else, so it cannot change before one
of those leaves does. An event leaf whose state is unknown answers None ("cannot say"),
which ``all`` and ``any`` pass on unless another child decides.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import Any

from eventfold.domain.profile import ProfileState
from eventfold.domain.segments.evaluate import (
    LeafState,
    Verdict,
    profile_values,
    value_check,
    values_check,
)
from eventfold.domain.segments.language import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventLeaf,
    NotOf,
    ProfileLeaf,
)


class Judgement:
    """One person at one moment, and the event-leaf figures worked out so far."""

    __slots__ = ("figures", "leaves", "state", "verdict")

    def __init__(
        self, state: ProfileState, leaves: Mapping[str, LeafState], verdict: Verdict
    ) -> None:
        self.state = state
        self.leaves = leaves
        self.verdict = verdict
        self.figures: dict[str, tuple[int, int]] = {}  # fingerprint -> (count, total)


Predicate = Callable[[Judgement], bool | None]


def is_member(
    condition: Condition, state: ProfileState, leaves: Mapping[str, LeafState], verdict: Verdict
) -> bool | None:
    """Whether the person matches the (resolved) condition; None when it depends on an
    event leaf whose state is not known for them yet (a backfill is on its way)."""
    return compile_predicate(condition)(Judgement(state, leaves, verdict))


def compile_predicate(condition: Condition) -> Predicate:
    """The condition (resolved: no segment leaves) as one closure."""
    if isinstance(condition, AllOf):
        return _all(tuple(compile_predicate(c) for c in condition.children))
    if isinstance(condition, AnyOf):
        return _any(tuple(compile_predicate(c) for c in condition.children))
    if isinstance(condition, NotOf):
        inner = compile_predicate(condition.child)

        def negated(judgement: Judgement) -> bool | None:
            result = inner(judgement)
            return None if result is None else not result

        return negated
    if isinstance(condition, ProfileLeaf):
        return _profile_leaf(condition)
    if isinstance(condition, EventLeaf):
        return _event_leaf(condition)
    raise TypeError(f"unresolved segment leaf {condition!r}")


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    def run(judgement: Judgement) -> bool | None:
        unknown = False
        for part in parts:
            result = part(judgement)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return run


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    def run(judgement: Judgement) -> bool | None:
        unknown = False
        for part in parts:
            result = part(judgement)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return run


def _profile_leaf(leaf: ProfileLeaf) -> Predicate:
    name, test = leaf.field, leaf.test
    if test.op in ("within", "notWithin"):
        window, inside_wanted = int(test.value), test.op == "within"

        def windowed(judgement: Judgement) -> bool:
            verdict, found = judgement.verdict, False
            now = verdict.now
            for moment in profile_values(judgement.state, name):
                verdict.change_at(moment)
                verdict.change_at(moment + window + 1)
                if (now - window <= moment <= now) is inside_wanted:
                    found = True
            return found

        return windowed
    check = values_check(test)
    return lambda judgement: check(profile_values(judgement.state, name))


def _event_leaf(leaf: EventLeaf) -> Predicate:
    fingerprint, window = leaf.fingerprint, leaf.window_ms
    check = value_check(leaf.test)
    summing = leaf.sum_field is not None
    if summing:
        test = leaf.test
        check = value_check(Comparison(test.op, _millionths_of(test.value)))

    def run(judgement: Judgement) -> bool | None:
        figures = judgement.figures.get(fingerprint)
        if figures is None:
            state = judgement.leaves.get(fingerprint)
            if state is None:
                return None
            figures = _figures(state, window, judgement.verdict)
            judgement.figures[fingerprint] = figures
        return check(figures[1] if summing else figures[0])

    return run


def _figures(state: LeafState, window: int | None, verdict: Verdict) -> tuple[int, int]:
    """(count, total) of the leaf now; notes when the window's contents change next."""
    if window is None:
        return state.count, state.total
    recent, now = state.recent, verdict.now
    low = bisect_left(recent, now - window, key=_moment)
    high = bisect_right(recent, now, key=_moment)
    if low < high:
        verdict.change_at(recent[low][0] + window + 1)  # the oldest inside leaves first
    if high < len(recent):
        verdict.change_at(recent[high][0])  # the next future-stamped one comes in
    return high - low, sum(amount for _, amount in recent[low:high])


def _moment(entry: tuple[int, int]) -> int:
    return entry[0]


def _millionths_of(value: Any) -> Any:
    if isinstance(value, tuple):
        return (round(value[0] * 1_000_000), round(value[1] * 1_000_000))
    return round(value * 1_000_000)
