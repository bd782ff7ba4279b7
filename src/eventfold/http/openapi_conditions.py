"""A segment's condition (docs/segments.md) as JSON Schema: the shapes of its six kinds,
their fields and operators, as ``domain/segments/language.py`` reads them. What depends
on more than a shape (an operator that suits the field's type, the value that suits the
operator, at most 10 levels, windows of 400 days, segments that exist) the server checks
and answers with paths."""

from __future__ import annotations

import re
from typing import Any

from eventfold.domain.segments.language import (
    COMPARISONS,
    DATE_OPS,
    EVENT_FIELDS,
    NUMERIC_OPS,
    PROFILE_FIELDS,
    STRING_OPS,
    TAG_OPS,
    WHERE_DATE_OPS,
)

CONDITION = "#/components/schemas/Condition"
_CUSTOM = r"custom\.(string|numeric|date)\.[\s\S]+"


def _field(fixed: dict[str, str]) -> dict[str, Any]:
    names = "|".join(re.escape(name) for name in fixed)
    return {"type": "string", "pattern": f"^({names}|{_CUSTOM})$"}


def _ops(*groups: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": sorted({op for group in groups for op in group})}


def _closed(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "additionalProperties": False,
        "properties": properties,
    }


def condition_schema() -> dict[str, Any]:
    """The ``Condition`` component: exactly one of its six kinds (recursive)."""
    children = {"type": "array", "minItems": 1, "items": {"$ref": CONDITION}}
    comparison = _closed(["op"], {"op": _ops(COMPARISONS), "value": {}})
    event = _closed(
        [],
        {
            "action": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}]},
            "where": {
                "type": "array",
                "items": _closed(
                    ["field", "op"],
                    {
                        "field": _field(EVENT_FIELDS),
                        "op": _ops(STRING_OPS, NUMERIC_OPS, WHERE_DATE_OPS),
                        "value": {},
                    },
                ),
            },
        },
    )
    return {
        "description": "exactly one of all, any, not, profile, event, segment (docs/segments.md)",
        "oneOf": [
            _closed(["all"], {"all": children}),
            _closed(["any"], {"any": children}),
            _closed(["not"], {"not": {"$ref": CONDITION}}),
            _closed(["segment"], {"segment": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}}),
            _closed(
                ["profile", "op"],
                {
                    "profile": _field(PROFILE_FIELDS),
                    "op": _ops(STRING_OPS, NUMERIC_OPS, DATE_OPS, TAG_OPS),
                    "value": {},
                },
            ),
            {
                **_closed(
                    ["event"],
                    {
                        "event": event,
                        "count": comparison,
                        "sum": _closed(
                            ["field", "op"],
                            {
                                "field": {"type": "string", "pattern": r"^custom\.numeric\."},
                                "op": _ops(COMPARISONS),
                                "value": {},
                            },
                        ),
                        "within": _closed(
                            ["last"],
                            {"last": {"type": "string", "pattern": "^[1-9][0-9]{0,6}[mhd]$"}},
                        ),
                    },
                ),
                "not": {"required": ["count", "sum"]},
            },
        ],
    }
