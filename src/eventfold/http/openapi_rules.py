"""The rules the server checks beyond the wire types' shapes, written as JSON Schema so
that the OpenAPI document rejects what the server rejects and accepts what it accepts.

What JSON Schema cannot say is said in the operations' descriptions instead (see
``ONE_PERSON``), and tests/test_openapi.py names each operation whose such rule keeps
schemathesis's "schema-valid request accepted" check out.
"""

from __future__ import annotations

import copy
from typing import Any

from eventfold.domain.identity import MAX_EMAIL_LENGTH
from eventfold.domain.webhooks import MAX_FILTER_ITEMS, MAX_URL_LENGTH, MESSAGE_TYPES, STATUSES
from eventfold.http.openapi_conditions import CONDITION, condition_schema

# Python's whitespace (str.isspace, and \s in its re), spelled out: \s differs between
# regular expression engines, and a validator in another language must agree with ours.
_SPACE = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000"
)
# identity.normalise_email: trimmed, then local@domain.tld with no spaces, "@" or NUL.
EMAIL_PATTERN = (
    f"^[{_SPACE}]*[^@{_SPACE}\\u0000]+@[^@{_SPACE}.\\u0000]+(\\.[^@{_SPACE}.\\u0000]+)+[{_SPACE}]*$"
)
# identity.normalise_phone: "+" and 4 to 15 digits once spaces, dashes and parentheses go.
PHONE_PATTERN = r"^[ ()-]*\+([ ()-]*[0-9]){4,15}[ ()-]*$"
EMAIL = {
    "type": "string",
    "pattern": EMAIL_PATTERN,
    "maxLength": MAX_EMAIL_LENGTH,
    "description": "an email address like name@example.com (trimmed and lower-cased)",
}
PHONE = {
    "type": "string",
    "pattern": PHONE_PATTERN,
    "description": "'+' and 4 to 15 digits, e.g. +359888123456 (spaces, dashes and "
    "parentheses are ignored)",
}
# A cursor is opaque: only the ones this server gave out are valid (no schema can say).
CURSOR_RULE = "nextCursor of the previous page, as it came; any other value is a 400"
ONE_PERSON = (
    "Name the person with exactly one of the query parameters email, phoneNumber and "
    "profileId (the shop's id); OpenAPI cannot say 'exactly one of', so the document "
    "marks each optional and the server answers 400 when none or several are given."
)
# webhooks.check_url: an absolute http(s) URL with a host, no user or password, no
# spaces or control characters, and a port from 0 to 65535 (or none); at most 2,000
# characters. The server also takes IPv6 literals ([2001:db8::1]), which the pattern
# leaves out rather than spell out which bracketed texts are IPv6 addresses.
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})?"
_NOT_IN_URL = f"\\u0000-\\u0020\\u007f{_SPACE}"
URL_PATTERN = (
    f"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\\[\\]:{_NOT_IN_URL}]+(:{_PORT})?([/?#][^{_NOT_IN_URL}]*)?$"
)
# The RFC 3339 date-times msgspec reads (T, t or a space between date and time; Z, z,
# +hh:mm or +hhmm or no zone, which means UTC; any digits of a second's fraction), a real
# day of a real month. Years 1000 to 9998: the server reads any year whose UTC form is
# within 1 to 9999, which a pattern cannot say of an offset; the extremes are left out.
_YEAR = "(1[0-9]{3}|[2-8][0-9]{3}|9[0-9]{2}[0-8]|9[0-9][0-8]9|9[0-8]99)"
_LEAP_YEAR = "([1-9][0-9](0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26])00)"
_DAY = (
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    "|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = (
    "[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"
    "([Zz]|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?"
)
DATE_TIME_PATTERN = f"^({_YEAR}-{_DAY}|{_LEAP_YEAR}-02-29){_TIME}$"


def person_parameters(optional_note: str) -> list[dict[str, Any]]:
    """email, phoneNumber and profileId as query parameters, each with its own rule."""
    return [
        {
            "name": "email",
            "in": "query",
            "required": False,
            "schema": EMAIL,
            "description": f"the person's email address {optional_note}",
        },
        {
            "name": "phoneNumber",
            "in": "query",
            "required": False,
            "schema": PHONE,
            "description": f"the person's phone number {optional_note}",
        },
        {
            "name": "profileId",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "minLength": 1},
            "description": f"the shop's own id for the person {optional_note}",
        },
    ]


# Not "format": "date-time", which needs a zone; the server reads a date-time without
# one as UTC.
DATE_TIME = {
    "type": "string",
    "pattern": DATE_TIME_PATTERN,
    "description": "an ISO-8601 date-time like 2026-11-01T00:00:00Z (no zone: UTC)",
}


# The server's clock decides this one; no schema can (a timestamp further ahead is a 400).
TIMESTAMP_RULE = (
    "an ISO-8601 date-time like 2026-11-01T00:00:00Z (no zone: UTC), at most 24 hours "
    "ahead of the server's clock (a rule of the clock that the pattern cannot state); "
    "left out, the time the event was received"
)


def apply_event_rules(schemas: dict[str, Any]) -> None:
    """An event names its person by an email or a phone number (a string, not null); its
    timestamp and date fields are date-times."""
    event = schemas["Event"]
    event["properties"]["timestamp"] = {
        "anyOf": [{**DATE_TIME, "description": TIMESTAMP_RULE}, {"type": "null"}],
        "default": None,
    }
    schemas["DateField"]["properties"]["values"]["items"] = DATE_TIME
    event["properties"]["email"] = {"anyOf": [EMAIL, {"type": "null"}], "default": None}
    event["properties"]["phoneNumber"] = {"anyOf": [PHONE, {"type": "null"}], "default": None}
    event["anyOf"] = [
        {"required": ["email"], "properties": {"email": {"type": "string"}}},
        {"required": ["phoneNumber"], "properties": {"phoneNumber": {"type": "string"}}},
    ]


def apply_upsert_rules(schemas: dict[str, Any], max_profiles: int) -> None:
    """A profile upsert names its person by an email, a phone number or a profileId;
    its timestamp is a date-time, checked against the clock as an event's."""
    upsert = schemas["ProfileUpsert"]
    properties = upsert["properties"]
    properties["timestamp"] = {
        "anyOf": [
            {**DATE_TIME, "description": TIMESTAMP_RULE.replace("the event", "the request")},
            {"type": "null"},
        ],
        "default": None,
    }
    properties["email"] = {"anyOf": [EMAIL, {"type": "null"}], "default": None}
    properties["phoneNumber"] = {"anyOf": [PHONE, {"type": "null"}], "default": None}
    upsert["anyOf"] = [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("email", "phoneNumber", "profileId")
    ]
    upsert["description"] = (
        "One person's changes: custom fields set (last writer wins by timestamp, as an "
        "event's), tags added and removed (a tag in both lists is removed). Several "
        "identifiers link their profiles, as an event's do."
    )
    # Said, not a maxItems: more is a 413, as for events.
    schemas["ProfileUpserts"]["description"] = (
        f"At most {max_profiles} profiles (more: 413); all or nothing."
    )


def stored_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as listed: as sent, with any timestamp (one left out is the time it was
    received), when it was received and the profile it was folded into."""
    stored = copy.deepcopy(event)
    stored.pop("title", None)
    stored["properties"]["timestamp"] = DATE_TIME
    stored["properties"]["receivedAt"] = {"type": "string", "format": "date-time"}
    stored["properties"]["foldedIntoProfile"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    stored["required"] = [*stored.get("required", []), "receivedAt", "foldedIntoProfile"]
    return stored


def apply_segment_rules(schemas: dict[str, Any]) -> None:
    """A definition's ``match`` is a ``Condition`` (openapi_conditions.py)."""
    schemas["Condition"] = condition_schema()
    schemas["SegmentBody"]["properties"]["match"] = {"$ref": CONDITION}


def apply_webhook_rules(schemas: dict[str, Any]) -> None:
    """URL, types, filters and status as domain/webhooks.py checks them."""
    url = {
        "type": "string",
        "maxLength": MAX_URL_LENGTH,
        "pattern": URL_PATTERN,
        "description": "an absolute http(s) URL with a host and no user or password, spaces "
        "or control characters; the server also takes an IPv6 literal host ([2001:db8::1]), "
        "which the pattern leaves out",
    }
    types = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": list(MESSAGE_TYPES)},
    }
    names = {
        "anyOf": [
            {
                "type": "array",
                "maxItems": MAX_FILTER_ITEMS,
                "items": {"type": "string", "minLength": 1},
            },
            {"type": "null"},
        ]
    }
    for name in ("WebhookCreate", "WebhookPatch"):
        properties = schemas[name]["properties"]
        properties["url"] = url
        properties["types"] = types
        properties["segments"] = {**names, **_default(properties["segments"])}
        properties["actions"] = {**names, **_default(properties["actions"])}
    schemas["WebhookPatch"]["properties"]["status"] = {"type": "string", "enum": list(STATUSES)}
    schemas["ReplayRequest"]["properties"]["since"] = DATE_TIME


def _default(schema: dict[str, Any]) -> dict[str, Any]:
    return {"default": schema["default"]} if "default" in schema else {}
