"""The segment condition language: JSON in, a checked condition tree out.

A definition is read as plain JSON and checked by hand rather than by a msgspec Struct
union, because the union has no tag field (``all``, ``profile``, ``event`` are told
apart by which key is present) and because every problem must name its path, e.g.
``match.all[2].op``, and say how to fix it. The tree it returns is what evaluation reads.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from eventfold.domain.moments import to_epoch_ms
from eventfold.errors import FieldError

MAX_SEGMENTS_PER_ACCOUNT = 100
MAX_DEFINITION_BYTES = 64 * 1024
MAX_NESTING = 10
MAX_WINDOW_MS = 400 * 24 * 3600 * 1000
KEY_PATTERN = re.compile(r"[a-z0-9_-]{1,64}\Z")

STRING_OPS = ("eq", "ne", "in", "contains", "startsWith", "exists")
NUMERIC_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "exists")
DATE_OPS = ("before", "after", "within", "notWithin", "exists")
TAG_OPS = ("contains",)
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
# Inside an event's ``where``, a date is compared with fixed moments only: a condition
# on each event that moved with the clock would make every stored event a timer.
WHERE_DATE_OPS = ("before", "after", "exists")
_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}

PROFILE_FIELDS = {
    "email": "string",
    "phoneNumber": "string",
    "locale": "string",
    "tags": "tags",
    "eventCount": "numeric",
    "firstSeen": "date",
    "lastSeen": "date",
}
EVENT_FIELDS = {
    "email": "string",
    "phoneNumber": "string",
    "locale": "string",
    "tags": "string",
    "products.id": "string",
}


class DefinitionError(Exception):
    """A definition breaks the language or a limit; carries every problem with its path."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


# --- the tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """``op`` with its value, already converted (dates to epoch ms, windows to ms)."""

    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class NotOf:
    child: Condition


@dataclass(frozen=True, slots=True)
class ProfileLeaf:
    field: str  # as written: "custom.numeric.price"
    kind: str  # "string", "numeric", "date" or "tags"
    test: Comparison


@dataclass(frozen=True, slots=True)
class EventFilter:
    field: str
    kind: str
    test: Comparison


@dataclass(frozen=True, slots=True)
class EventLeaf:
    """Counts (or sums a field of) the person's events that pass the filters, over a
    window of time or all time, and compares the figure."""

    action: str | None
    where: tuple[EventFilter, ...]
    sum_field: str | None  # "custom.numeric.KEY", or None to count
    test: Comparison  # on the count, or on the sum
    window_ms: int | None  # None: all time
    # Two leaves with the same filters, field and window share one incremental state.
    fingerprint: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class SegmentLeaf:
    key: str


Condition = AllOf | AnyOf | NotOf | ProfileLeaf | EventLeaf | SegmentLeaf


# --- reading -------------------------------------------------------------------------


def parse_condition(raw: Any, path: str = "match") -> Condition:
    """The condition tree of ``raw`` (decoded JSON); raises DefinitionError listing every
    problem with its path."""
    errors: list[FieldError] = []
    condition = _Reader(errors).condition(raw, path, 1)
    if errors:
        raise DefinitionError(errors)
    assert condition is not None
    return condition


def segment_references(condition: Condition) -> set[str]:
    """The keys of the segments ``condition`` names."""
    if isinstance(condition, SegmentLeaf):
        return {condition.key}
    if isinstance(condition, AllOf | AnyOf):
        return set().union(*(segment_references(c) for c in condition.children))
    if isinstance(condition, NotOf):
        return segment_references(condition.child)
    return set()


def event_leaves(condition: Condition) -> list[EventLeaf]:
    """The event leaves of ``condition`` itself (not of the segments it names)."""
    if isinstance(condition, EventLeaf):
        return [condition]
    if isinstance(condition, AllOf | AnyOf):
        return [leaf for child in condition.children for leaf in event_leaves(child)]
    if isinstance(condition, NotOf):
        return event_leaves(condition.child)
    return []


def parse_window(raw: Any, path: str, errors: list[FieldError]) -> int | None:
    """``{"last": "7d"}`` as milliseconds."""
    if not isinstance(raw, dict) or set(raw) != {"last"} or not isinstance(raw["last"], str):
        errors.append(FieldError(path, 'must be {"last": "<n><unit>"} like {"last": "7d"}'))
        return None
    match = re.fullmatch(r"([1-9][0-9]{0,6})([mhd])", raw["last"])
    if match is None:
        errors.append(
            FieldError(
                f"{path}.last",
                f"{raw['last'][:20]!r} is not a duration; write a whole number and a unit "
                "m (minutes), h (hours) or d (days), like '7d'",
            )
        )
        return None
    window = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if window > MAX_WINDOW_MS:
        errors.append(FieldError(f"{path}.last", "windows are at most 400 days"))
        return None
    return window


class _Reader:
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def condition(self, raw: Any, path: str, depth: int) -> Condition | None:
        if depth > MAX_NESTING:
            self.fail(path, f"conditions nest at most {MAX_NESTING} deep; flatten all/any")
            return None
        if not isinstance(raw, dict):
            self.fail(path, "must be an object: all, any, not, profile, event or segment")
            return None
        kinds = [k for k in ("all", "any", "not", "profile", "event", "segment") if k in raw]
        if len(kinds) != 1:
            self.fail(
                path,
                "must have exactly one of 'all', 'any', 'not', 'profile', 'event', 'segment'"
                + (f" (has {', '.join(kinds)})" if kinds else ""),
            )
            return None
        kind = kinds[0]
        if kind in ("all", "any"):
            return self.combinator(kind, raw, path, depth)
        if kind == "not":
            self.unknown_keys(raw, {"not"}, path)
            child = self.condition(raw["not"], f"{path}.not", depth + 1)
            return NotOf(child) if child is not None else None
        if kind == "segment":
            self.unknown_keys(raw, {"segment"}, path)
            key = raw["segment"]
            if not isinstance(key, str) or KEY_PATTERN.match(key) is None:
                self.fail(f"{path}.segment", "must be a segment key (1-64 of a-z 0-9 _ -)")
                return None
            return SegmentLeaf(key)
        if kind == "profile":
            return self.profile_leaf(raw, path)
        return self.event_leaf(raw, path)

    def unknown_keys(self, raw: dict[str, Any], known: set[str], path: str) -> None:
        for key in sorted(set(raw) - known):
            self.fail(f"{path}.{key}", f"unknown field; allowed here: {', '.join(sorted(known))}")

    def combinator(self, kind: str, raw: dict[str, Any], path: str, depth: int) -> Condition | None:
        self.unknown_keys(raw, {kind}, path)
        items = raw[kind]
        if not isinstance(items, list) or not items:
            self.fail(f"{path}.{kind}", "must be a non-empty list of conditions")
            return None
        children = [
            self.condition(item, f"{path}.{kind}[{index}]", depth + 1)
            for index, item in enumerate(items)
        ]
        if any(child is None for child in children):
            return None
        found = tuple(child for child in children if child is not None)
        return AllOf(found) if kind == "all" else AnyOf(found)

    def profile_leaf(self, raw: dict[str, Any], path: str) -> Condition | None:
        self.unknown_keys(raw, {"profile", "op", "value"}, path)
        name = raw["profile"]
        kind = field_kind(name, PROFILE_FIELDS) if isinstance(name, str) else None
        if kind is None:
            self.fail(
                f"{path}.profile",
                f"{str(name)[:80]!r} is not a profile field; use one of "
                f"{', '.join(PROFILE_FIELDS)}, custom.string.KEY, custom.numeric.KEY, "
                "custom.date.KEY",
            )
            return None
        ops = {"string": STRING_OPS, "numeric": NUMERIC_OPS, "date": DATE_OPS, "tags": TAG_OPS}
        test = self.comparison(raw, path, kind, ops[kind])
        if test is not None and kind == "tags":
            test = Comparison("has", test.value)  # a tag equal to the value, not a substring
        return ProfileLeaf(name, kind, test) if test is not None else None

    def comparison(
        self, raw: dict[str, Any], path: str, kind: str, allowed: tuple[str, ...]
    ) -> Comparison | None:
        op = raw.get("op")
        noun = {"tags": "the tags field"}.get(kind, f"{kind} fields")
        if op not in allowed:
            shown = f"{op!r}" if isinstance(op, str) else "a missing or non-text op"
            # 'exists' works on every field and is not listed (docs/segments.md).
            listed = ", ".join(name for name in allowed if name != "exists")
            self.fail(f"{path}.op", f"{shown} is not an operator for {noun}; use one of {listed}")
            return None
        value_path = f"{path}.value"
        if op == "exists":
            value = raw.get("value", True)
            if not isinstance(value, bool):
                self.fail(value_path, "exists takes true, false or no value")
                return None
            return Comparison(op, value)
        if "value" not in raw:
            self.fail(value_path, f"'{op}' needs a value")
            return None
        value = raw["value"]
        if op in ("within", "notWithin"):
            window = parse_window(value, value_path, self.errors)
            return Comparison(op, window) if window is not None else None
        if kind == "date":
            moment = _moment(value)
            if moment is None:
                self.fail(value_path, "must be an ISO-8601 date-time like '2024-05-01T10:00:00Z'")
                return None
            return Comparison(op, moment)
        if kind == "numeric":
            return self.numeric_value(op, value, value_path)
        if op == "in":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) for v in value)
            ):
                self.fail(value_path, "'in' takes a non-empty list of strings")
                return None
            return Comparison(op, frozenset(value))
        if not isinstance(value, str):
            self.fail(value_path, f"'{op}' takes a string")
            return None
        return Comparison(op, value)

    def numeric_value(self, op: str, value: Any, path: str) -> Comparison | None:
        if op == "between":
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not all(_is_number(v) for v in value)
                or value[0] > value[1]
            ):
                self.fail(path, "'between' takes [lo, hi], two numbers with lo <= hi")
                return None
            return Comparison(op, (float(value[0]), float(value[1])))
        if not _is_number(value):
            self.fail(path, f"'{op}' takes a number")
            return None
        return Comparison(op, float(value))

    def event_leaf(self, raw: dict[str, Any], path: str) -> Condition | None:
        self.unknown_keys(raw, {"event", "count", "sum", "within"}, path)
        spec = raw["event"]
        if not isinstance(spec, dict):
            self.fail(f"{path}.event", 'must be an object like {"action": "purchase"}')
            return None
        self.unknown_keys(spec, {"action", "where"}, f"{path}.event")
        action = spec.get("action")
        if action is not None and (not isinstance(action, str) or not action):
            self.fail(f"{path}.event.action", "must be a non-empty string")
        where = self.filters(spec.get("where", []), f"{path}.event.where")
        if "count" in raw and "sum" in raw:
            self.fail(path, "takes 'count' or 'sum', not both")
            return None
        sum_field: str | None = None
        if "sum" in raw:
            aggregate, aggregate_path = raw["sum"], f"{path}.sum"
            if isinstance(aggregate, dict):
                self.unknown_keys(aggregate, {"field", "op", "value"}, aggregate_path)
                sum_field = aggregate.get("field")
                if not isinstance(sum_field, str) or not sum_field.startswith("custom.numeric."):
                    self.fail(f"{aggregate_path}.field", "must be a field custom.numeric.KEY")
                    sum_field = None
        else:
            aggregate, aggregate_path = raw.get("count", {"op": "gte", "value": 1}), f"{path}.count"
            if isinstance(aggregate, dict):
                self.unknown_keys(aggregate, {"op", "value"}, aggregate_path)
        if not isinstance(aggregate, dict):
            self.fail(aggregate_path, 'must be an object like {"op": "gte", "value": 2}')
            return None
        test = self.comparison(aggregate, aggregate_path, "numeric", COMPARISONS)
        window = (
            parse_window(raw["within"], f"{path}.within", self.errors) if "within" in raw else None
        )
        if test is None or where is None or ("within" in raw and window is None):
            return None
        if "sum" in raw and sum_field is None:
            return None
        return EventLeaf(action, where, sum_field, test, window, _fingerprint(raw, sum_field))

    def filters(self, raw: Any, path: str) -> tuple[EventFilter, ...] | None:
        if not isinstance(raw, list):
            self.fail(path, "must be a list of {field, op, value}")
            return None
        found: list[EventFilter] = []
        for index, item in enumerate(raw):
            item_path = f"{path}[{index}]"
            if not isinstance(item, dict):
                self.fail(item_path, "must be an object {field, op, value}")
                continue
            self.unknown_keys(item, {"field", "op", "value"}, item_path)
            name = item.get("field")
            kind = field_kind(name, EVENT_FIELDS) if isinstance(name, str) else None
            if kind is None or not isinstance(name, str):
                self.fail(
                    f"{item_path}.field",
                    f"{str(name)[:80]!r} is not an event field; use one of "
                    f"{', '.join(EVENT_FIELDS)}, custom.string.KEY, custom.numeric.KEY, "
                    "custom.date.KEY",
                )
                continue
            ops = {"string": STRING_OPS, "numeric": NUMERIC_OPS, "date": WHERE_DATE_OPS}
            test = self.comparison(item, item_path, kind, ops[kind])
            if test is not None:
                found.append(EventFilter(name, kind, test))
        return tuple(found) if len(found) == len(raw) else None


def field_kind(name: str, fixed: dict[str, str]) -> str | None:
    """The type of a field name: fixed ones, or custom.TYPE.KEY with a non-empty KEY."""
    if name in fixed:
        return fixed[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "custom" and parts[1] in ("string", "numeric", "date"):
        return parts[1] if parts[2] else None
    return None


def _fingerprint(raw: dict[str, Any], sum_field: str | None) -> str:
    shared = {
        "event": raw["event"],
        "within": raw.get("within"),
        "sum": sum_field,
    }
    canonical = msgspec.json.encode(shared, order="sorted")
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _moment(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return to_epoch_ms(msgspec.convert(value, datetime))
    except msgspec.ValidationError:
        return None
