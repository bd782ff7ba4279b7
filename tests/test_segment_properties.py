"""Membership is a pure function of the folded events and the time: the incremental
state the fold, timer and backfill keep always agrees with evaluating from scratch,
whatever the order of events, merges, erasures and new definitions."""

from __future__ import annotations

from typing import Any

from hypothesis import given, note, settings
from hypothesis import strategies as st

from eventfold.domain.fold_input import FoldCustom, FoldCustomField, FoldInput
from eventfold.services.segment_loops import backfill_step, timer_step
from tests.segment_world import ACCOUNT, World

MINUTE = 60_000
START = 1_800_000_000_000

emails = st.sampled_from(["a@x.co", "b@x.co", "c@x.co", "d@x.co"])
phones = st.sampled_from(["+1", "+2", "+3"])


@st.composite
def events(draw: st.DrawFn) -> tuple[FoldInput, int]:
    email = draw(st.none() | emails)
    phone = draw(st.none() | phones) if email is not None else draw(phones)
    price = draw(
        st.integers(0, 300) | st.floats(0, 300, allow_nan=False).map(lambda f: round(f, 2))
    )
    event = FoldInput(
        action=draw(st.sampled_from(["purchase", "view"])),
        email=email,
        phoneNumber=phone,
        tags=draw(st.lists(st.sampled_from(["gold", "new"]), max_size=2)),
        custom=FoldCustom(numeric=[FoldCustomField("price", [price])]),
    )
    # Out of order: up to 20 minutes late, or a little ahead of the clock.
    return event, draw(
        st.sampled_from([-20, -12, -6, -5, -1, 0, 0, 1, 2]).map(lambda m: m * MINUTE)
        | st.integers(-20 * MINUTE, 2 * MINUTE)
    )


windows = st.sampled_from([None, {"last": "5m"}, {"last": "12m"}, {"last": "5m"}])


@st.composite
def leaves(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["count", "sum", "profile", "date", "tags"]))
    if kind in ("count", "sum"):
        leaf: dict[str, Any] = {"event": {"action": draw(st.sampled_from(["purchase", "view"]))}}
        if draw(st.booleans()):
            leaf["event"]["where"] = [
                {"field": "custom.numeric.price", "op": "gte", "value": draw(st.integers(0, 300))}
            ]
        window = draw(windows)
        if window is not None:
            leaf["within"] = window
        if kind == "count":
            leaf["count"] = {
                "op": draw(st.sampled_from(["gte", "eq", "lt"])),
                "value": draw(st.integers(0, 3)),
            }
        else:
            leaf["sum"] = {
                "field": "custom.numeric.price",
                "op": "gte",
                "value": draw(st.integers(0, 600)),
            }
        return leaf
    if kind == "profile":
        return {"profile": "eventCount", "op": "gte", "value": draw(st.integers(1, 4))}
    if kind == "tags":
        return {"profile": "tags", "op": "contains", "value": "gold"}
    return {
        "profile": "lastSeen",
        "op": draw(st.sampled_from(["within", "notWithin"])),
        "value": draw(windows.filter(bool)),
    }


conditions = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"any": c}),
        inner.map(lambda c: {"not": c}),
    ),
    max_leaves=4,
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("fold"), st.lists(events(), min_size=1, max_size=4)),
        st.tuples(st.just("fold"), st.lists(events(), min_size=1, max_size=2)),
        st.tuples(st.just("erase"), emails | phones),
        st.tuples(
            st.just("wait"),
            st.sampled_from([0, 1, 3, 5, 7, 13]).map(lambda m: m * MINUTE)
            | st.integers(0, 8 * MINUTE),
        ),
        st.tuples(st.just("define"), conditions),
        st.tuples(st.just("backfill"), st.integers(1, 3)),
    ),
    min_size=4,
    max_size=30,
)


def check(world: World) -> None:
    """Every ready segment's members are exactly those judged from scratch now."""
    conditions = world.conditions()
    for record in world.segments:
        if record.status != "ready":
            continue
        for pid in world.states:
            expected = world.from_scratch(pid, conditions[record.id])
            kept = record.id in world.members.get(pid, {})
            assert kept == expected, (record.key, pid, world.now)
    for pid in world.members:
        assert pid in world.states  # nobody merged away or erased stays a member


@settings(max_examples=500, deadline=None)
@given(first=leaves() | conditions, steps=operations)
def test_incremental_membership_equals_evaluation_from_scratch(
    first: Any, steps: list[Any]
) -> None:
    note(f"first={first!r}")
    note(f"steps={steps!r}")
    world = World(START)
    world.define("s0", first)
    backfill_step(world)  # no profiles yet: ready at once, and checked from the start
    for kind, argument in steps:
        if kind == "fold":
            world.fold([(event, world.now + offset) for event, offset in argument])
        elif kind == "erase":
            world.erase((ACCOUNT, "email" if "@" in argument else "phoneNumber", argument))
        elif kind == "wait":
            world.now += argument
        elif kind == "define":
            world.define(f"s{len(world.segments)}", argument)
        else:
            for _ in range(argument):
                backfill_step(world, profiles=1)  # a profile at a time, between folds
        # The timer catches up with the clock (within 60 s in production).
        while timer_step(world, lambda: world.now):
            pass
        check(world)
    while backfill_step(world, profiles=2):
        pass
    while timer_step(world, lambda: world.now):
        pass
    check(world)
    assert all(record.status == "ready" for record in world.segments)


def test_a_merge_keeps_both_peoples_states_though_its_event_matches_no_leaf() -> None:
    world = World(START)
    world.define("twice", {"event": {"action": "purchase"}, "count": {"op": "gte", "value": 2}})
    backfill_step(world)
    world.fold([(FoldInput(action="purchase", email="a@x.co"), START)])
    world.fold([(FoldInput(action="purchase", phoneNumber="+1"), START)])
    world.fold([(FoldInput(action="view", email="a@x.co", phoneNumber="+1"), START)])
    world.fold([(FoldInput(action="view", email="a@x.co"), START)])  # judged from stored states
    check(world)
    assert len(world.members) == 1
