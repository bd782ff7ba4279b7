"""The compiled program (one generated function for all of an account's segments)
answers what the plain evaluator answers, for every operator and for random
combinations of them, segments naming segments included; its next change moment is
never later than the plain evaluator's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfold.domain.segments.evaluate import LeafState, Verdict, leaf_from_events, resolve
from eventfold.domain.segments.language import Condition, event_leaves, parse_condition
from eventfold.domain.segments.predicates import is_member
from eventfold.domain.segments.program import compile_program
from tests.test_segment_language import ANN, CASES, HISTORY, NOW, p


def _program_answers(matches: list[Any], now: int = NOW) -> tuple[list[bool], int | None]:
    parsed = [(index + 1, f"s{index}", parse_condition(m)) for index, m in enumerate(matches)]
    program = compile_program(parsed)
    states: dict[str, LeafState] = {}
    program.add_events(states, HISTORY, now)
    program.cut(states, now)
    bits, next_change = program.judge(states, ANN, now)
    return [bits & program.bit_of[sid] != 0 for sid, _, _ in parsed], next_change


def _plain_answers(matches: list[Any], now: int = NOW) -> tuple[list[bool], int | None]:
    parsed = {f"s{index}": parse_condition(m) for index, m in enumerate(matches)}
    answers, soonest = [], None
    for key in parsed:
        condition: Condition = resolve(parsed[key], parsed)
        leaves = {
            leaf.fingerprint: leaf_from_events(leaf, HISTORY, now)
            for leaf in event_leaves(condition)
        }
        verdict = Verdict(now)
        result = is_member(condition, ANN, leaves, verdict)
        assert result is not None
        answers.append(result)
        if verdict.next_change is not None:
            soonest = min(soonest or verdict.next_change, verdict.next_change)
    return answers, soonest


@pytest.mark.parametrize(("match", "expected"), CASES)
def test_the_program_judges_each_operator_as_the_plain_evaluator(
    match: Any, expected: bool
) -> None:
    assert _program_answers([match])[0] == [expected]


leaves = st.sampled_from([match for match, _ in CASES])
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(inner, min_size=1, max_size=3).map(lambda c: {"any": c}),
        inner.map(lambda c: {"not": c}),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    first=conditions,
    second=conditions,
    naming=st.sampled_from(["alone", "all", "any", "not"]),
    hours_later=st.sampled_from([0, 1, 30, 24 * 3, 24 * 8]),
)
def test_random_segments_and_segments_naming_them_agree_with_the_plain_evaluator(
    first: Any, second: Any, naming: str, hours_later: int
) -> None:
    if naming == "not":
        second = {"not": {"segment": "s0"}}
    elif naming != "alone":
        second = {naming: [second, {"segment": "s0"}]}
    now = NOW + hours_later * 3_600_000
    compiled, compiled_next = _program_answers([first, second], now)
    plain, plain_next = _plain_answers([first, second], now)
    assert compiled == plain
    if plain_next is not None:
        assert compiled_next is not None
        assert compiled_next <= plain_next


def test_segments_in_any_order_name_each_other() -> None:
    # s0 names s1, defined after it: the program judges s1 first.
    matches = [{"not": {"segment": "s1"}}, p("locale", "eq", "bg")]
    assert _program_answers(matches)[0] == [False, True]
