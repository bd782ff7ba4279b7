"""The condition language: every operator on a known person, and the error messages."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.domain.fold_input import FoldCustom, FoldCustomField, FoldInput, FoldProduct
from eventfold.domain.profile import ProfileState, fold_events
from eventfold.domain.segments.evaluate import Verdict, leaf_from_events
from eventfold.domain.segments.language import DefinitionError, event_leaves, parse_condition
from eventfold.domain.segments.predicates import is_member

NOW = 1_800_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


def purchase(price: float, product: str) -> FoldInput:
    return FoldInput(
        action="purchase",
        email="ann@shop.bg",
        products=[FoldProduct(product)],
        custom=FoldCustom(numeric=[FoldCustomField("price", [price])]),
    )


HISTORY = [
    (purchase(150, "123"), NOW - 2 * DAY),
    (purchase(40, "456"), NOW - 10 * DAY),
    (
        FoldInput(
            action="view",
            email="ann@shop.bg",
            phoneNumber="+359888",
            locale="bg",
            tags=["gold"],
            custom=FoldCustom(
                string=[FoldCustomField("color", ["red", "blue"])],
                numeric=[FoldCustomField("score", [7])],
                date=[FoldCustomField("birthday", ["1990-05-01T00:00:00Z"])],
            ),
        ),
        NOW - HOUR,
    ),
]
ANN = fold_events(ProfileState(), [(event, at, seq) for seq, (event, at) in enumerate(HISTORY)])


def judge(match: Any) -> bool:
    condition = parse_condition(match)
    leaves = {
        leaf.fingerprint: leaf_from_events(leaf, HISTORY, NOW) for leaf in event_leaves(condition)
    }
    result = is_member(condition, ANN, leaves, Verdict(NOW))
    assert result is not None
    return result


def p(field: str, op: str, value: Any = None) -> dict[str, Any]:
    leaf: dict[str, Any] = {"profile": field, "op": op}
    if value is not None:
        leaf["value"] = value
    return leaf


CASES = [
    # string
    (p("email", "eq", "ann@shop.bg"), True),
    (p("email", "eq", "bob@shop.bg"), False),
    (p("locale", "ne", "en"), True),
    (p("locale", "ne", "bg"), False),
    (p("custom.string.color", "in", ["blue", "green"]), True),
    (p("custom.string.color", "in", ["green"]), False),
    (p("email", "contains", "@shop"), True),
    (p("email", "contains", "@mail"), False),
    (p("phoneNumber", "startsWith", "+359"), True),
    (p("phoneNumber", "startsWith", "+44"), False),
    (p("custom.string.color", "exists"), True),
    (p("custom.string.size", "exists"), False),
    (p("custom.string.size", "exists", False), True),
    # numeric
    (p("eventCount", "eq", 3), True),
    (p("eventCount", "ne", 3), False),
    (p("eventCount", "gt", 2), True),
    (p("eventCount", "gt", 3), False),
    (p("eventCount", "gte", 3), True),
    (p("eventCount", "lt", 3), False),
    (p("eventCount", "lte", 3), True),
    (p("custom.numeric.score", "between", [5, 7]), True),
    (p("custom.numeric.score", "between", [8, 9]), False),
    (p("custom.numeric.score", "exists"), True),
    # date
    (p("firstSeen", "before", "2027-02-01T00:00:00Z"), True),
    (p("firstSeen", "after", "2027-02-01T00:00:00Z"), False),
    (p("lastSeen", "within", {"last": "2h"}), True),
    (p("lastSeen", "within", {"last": "30m"}), False),
    (p("firstSeen", "within", {"last": "7d"}), False),
    (p("firstSeen", "notWithin", {"last": "7d"}), True),
    (p("lastSeen", "notWithin", {"last": "1d"}), False),
    (p("custom.date.birthday", "before", "2000-01-01T00:00:00Z"), True),
    (p("custom.date.birthday", "exists"), True),
    # tags: a tag equal to the value, not a part of one
    (p("tags", "contains", "gold"), True),
    (p("tags", "contains", "gol"), False),
    # events
    ({"event": {"action": "purchase"}, "count": {"op": "gte", "value": 2}}, True),
    (
        {
            "event": {"action": "purchase"},
            "count": {"op": "gte", "value": 2},
            "within": {"last": "7d"},
        },
        False,
    ),
    ({"event": {"action": "purchase"}, "within": {"last": "3d"}}, True),
    ({"event": {}, "count": {"op": "eq", "value": 3}}, True),
    ({"event": {"where": [{"field": "products.id", "op": "in", "value": ["456"]}]}}, True),
    (
        {
            "event": {
                "action": "purchase",
                "where": [{"field": "custom.numeric.price", "op": "gte", "value": 100}],
            },
            "count": {"op": "eq", "value": 1},
        },
        True,
    ),
    (
        {
            "event": {"action": "purchase"},
            "sum": {"field": "custom.numeric.price", "op": "gte", "value": 190},
        },
        True,
    ),
    (
        {
            "event": {"action": "purchase"},
            "sum": {"field": "custom.numeric.price", "op": "gt", "value": 190},
        },
        False,
    ),
    (
        {
            "event": {"action": "purchase"},
            "sum": {"field": "custom.numeric.price", "op": "between", "value": [100, 160]},
            "within": {"last": "7d"},
        },
        True,
    ),
    ({"event": {"where": [{"field": "tags", "op": "eq", "value": "gold"}]}}, True),
    (
        {
            "event": {
                "where": [
                    {
                        "field": "custom.date.birthday",
                        "op": "after",
                        "value": "2000-01-01T00:00:00Z",
                    }
                ]
            }
        },
        False,
    ),
    # combinators
    ({"all": [p("eventCount", "eq", 3), p("locale", "eq", "bg")]}, True),
    ({"all": [p("eventCount", "eq", 3), p("locale", "eq", "en")]}, False),
    ({"any": [p("eventCount", "eq", 9), p("locale", "eq", "bg")]}, True),
    ({"any": [p("eventCount", "eq", 9), p("locale", "eq", "en")]}, False),
    ({"not": p("locale", "eq", "en")}, True),
]


@pytest.mark.parametrize(("match", "expected"), CASES)
def test_each_operator_judges_a_known_person(match: Any, expected: bool) -> None:
    assert judge(match) is expected


def errors_of(match: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        parse_condition(match)
    return [f"{e.path}: {e.message}" for e in caught.value.errors]


def test_an_unknown_operator_names_its_path_and_the_operators_that_fit() -> None:
    match = {
        "all": [p("eventCount", "gt", 1), p("locale", "eq", "bg"), p("eventCount", "bigger", 1)]
    }
    assert errors_of(match) == [
        "match.all[2].op: 'bigger' is not an operator for numeric fields; "
        "use one of eq, ne, gt, gte, lt, lte, between"
    ]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (
            p("tags", "eq", "x"),
            "match.op: 'eq' is not an operator for the tags field; use one of contains",
        ),
        (
            p("lastSeen", "gt", 1),
            "match.op: 'gt' is not an operator for date fields;"
            " use one of before, after, within, notWithin",
        ),
        (p("shoeSize", "eq", "x"), "match.profile: 'shoeSize' is not a profile field"),
        (
            p("custom.numeric.price", "between", [5, 1]),
            "match.value: 'between' takes [lo, hi], two numbers with lo <= hi",
        ),
        (p("firstSeen", "before", "yesterday"), "match.value: must be an ISO-8601 date-time"),
        (p("lastSeen", "within", {"last": "7w"}), "match.value.last: '7w' is not a duration"),
        (
            p("lastSeen", "within", {"last": "401d"}),
            "match.value.last: windows are at most 400 days",
        ),
        ({"any": []}, "match.any: must be a non-empty list of conditions"),
        (
            {"all": [{"profile": "email", "op": "eq", "value": "a", "event": {}}]},
            "match.all[0]: must have exactly one of",
        ),
        (
            {"event": {"action": "buy"}, "count": {"op": "gte", "value": 1}, "sum": {}},
            "match: takes 'count' or 'sum', not both",
        ),
        (
            {"event": {"action": "buy"}, "sum": {"field": "price", "op": "gte", "value": 1}},
            "match.sum.field: must be a field custom.numeric.KEY",
        ),
        (
            {
                "event": {
                    "where": [{"field": "custom.date.d", "op": "within", "value": {"last": "1d"}}]
                }
            },
            "match.event.where[0].op: 'within' is not an operator for date fields;"
            " use one of before, after",
        ),
        (
            {"event": {"where": [{"field": "total", "op": "eq", "value": 1}]}},
            "match.event.where[0].field: 'total' is not an event field",
        ),
        ({"segment": "Not A Key"}, "match.segment: must be a segment key"),
        (
            {"profile": "email", "op": "eq", "value": "a", "colour": 1},
            "match.colour: unknown field",
        ),
    ],
)
def test_a_definition_error_names_the_field_and_the_fix(match: Any, expected: str) -> None:
    assert any(error.startswith(expected) for error in errors_of(match)), errors_of(match)


def test_conditions_nest_at_most_ten_deep() -> None:
    match: Any = p("eventCount", "gt", 1)
    for _ in range(9):
        match = {"not": match}
    assert parse_condition(match) is not None
    assert errors_of({"not": match}) == [
        "match" + ".not" * 10 + ": conditions nest at most 10 deep; flatten all/any"
    ]


def test_identical_event_leaves_share_one_state() -> None:
    leaf = {"event": {"action": "purchase"}, "within": {"last": "7d"}}
    first = event_leaves(parse_condition(leaf))[0]
    again = event_leaves(parse_condition({"all": [leaf]}))[0]
    other = event_leaves(parse_condition({**leaf, "within": {"last": "8d"}}))[0]
    assert first.fingerprint == again.fingerprint != other.fingerprint
