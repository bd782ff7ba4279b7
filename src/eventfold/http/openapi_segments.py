"""The segments' part of the OpenAPI document (docs/segments.md has the language)."""

from __future__ import annotations

from typing import Any

from eventfold.http.openapi_rules import CURSOR_RULE
from eventfold.services.segments import (
    ChangesPage,
    MembersPage,
    SegmentBody,
    SegmentList,
    SegmentView,
)

REF = "#/components/schemas/{name}"
SEGMENT_TYPES = (SegmentBody, SegmentView, SegmentList, MembersPage, ChangesPage)
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": CURSOR_RULE,
}
_LANGUAGE = (
    "match is a condition: {all: [...]}, {any: [...]}, {not: C}, a profile leaf "
    "{profile, op, value}, an event leaf {event: {action, where}, count | sum, within} or "
    "{segment: key}; see docs/segments.md. At most 100 segments an account, 64 KiB a "
    "definition, 10 levels of nesting, windows of 400 days."
)


def segment_schemas(schemas: dict[str, Any]) -> None:
    """Describes ``match`` as the language's JSON (checked by the server, with paths)."""
    condition = {"type": "object", "description": _LANGUAGE}
    schemas["SegmentBody"]["properties"]["match"] = dict(condition)
    schemas["SegmentView"]["properties"]["match"] = condition
    key = schemas["SegmentBody"]["properties"]["key"]
    key.update({"pattern": "^[a-z0-9_-]{1,64}$"})
    schemas["SegmentBody"]["properties"]["name"].update({"minLength": 1, "maxLength": 200})


def segment_paths(ok: Any, error: Any, bad: Any, unauthorized: Any) -> dict[str, Any]:
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(name="SegmentBody")}}},
    }
    missing = error("no segment with this key in the key's account")
    return {
        "/api/v0/segments": {
            "get": {
                "summary": "List the account's segments with status and member count",
                "responses": {**ok("the segments", "SegmentList"), "401": unauthorized},
            },
            "post": {
                "summary": "Define a segment; existing profiles are evaluated in the background",
                "description": _LANGUAGE,
                "requestBody": body,
                "responses": {
                    **ok("stored; status is preparing until evaluated", "SegmentView", "201"),
                    "400": bad,
                    "401": unauthorized,
                    "409": error("a segment with this key exists"),
                    "413": error("the body is over 1 MiB"),
                    "415": error("the body is not JSON"),
                },
            },
        },
        "/api/v0/segments/{key}": {
            "get": {
                "summary": "Read one segment",
                "parameters": [_KEY],
                "responses": {
                    **ok("the segment", "SegmentView"),
                    "401": unauthorized,
                    "404": missing,
                },
            },
            "put": {
                "summary": "Replace a segment's definition (version + 1, evaluated again)",
                "parameters": [_KEY],
                "requestBody": body,
                "responses": {
                    **ok("stored; status is preparing until evaluated", "SegmentView"),
                    "400": bad,
                    "401": unauthorized,
                    "404": missing,
                    "413": error("the body is over 1 MiB"),
                    "415": error("the body is not JSON"),
                },
            },
            "delete": {
                "summary": "Delete a segment, its members and its change feed",
                "parameters": [_KEY],
                "responses": {
                    "204": {"description": "deleted"},
                    "401": unauthorized,
                    "404": missing,
                    "409": error("another segment names this one"),
                },
            },
        },
        "/api/v0/segments/{key}/members": {
            "get": {
                "summary": "The segment's members, by profile id",
                "parameters": [_KEY, _LIMIT, _CURSOR],
                "responses": {
                    **ok("a page of members", "MembersPage"),
                    "400": bad,
                    "401": unauthorized,
                    "404": missing,
                },
            }
        },
        "/api/v0/segments/{key}/changes": {
            "get": {
                "summary": "Entries and exits in commit order, oldest first; nextCursor resumes",
                "parameters": [_KEY, _CURSOR, _LIMIT],
                "responses": {
                    **ok("a page of changes", "ChangesPage"),
                    "400": bad,
                    "401": unauthorized,
                    "404": missing,
                },
            }
        },
    }
