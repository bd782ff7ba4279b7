"""The profiles' part of the OpenAPI document: upsert, read one, erase one, export all."""

from __future__ import annotations

from typing import Any

from eventfold.http.openapi_rules import DATE_TIME, ONE_PERSON, person_parameters

_PERSON = person_parameters("(exactly one of email, phoneNumber, profileId)")
_RETRY = {"Retry-After": "seconds to wait before retrying"}
_UPSERTS = "#/components/schemas/ProfileUpserts"


def profile_paths(ok: Any, error: Any, bad: Any, unauthorized: Any) -> dict[str, Any]:
    return {
        "/api/v0/profiles": {
            "get": {
                "summary": "Read one person's profile",
                "description": ONE_PERSON,
                "parameters": _PERSON,
                "responses": {
                    **ok("the profile", "ProfileView"),
                    "400": bad,
                    "401": unauthorized,
                    "404": error("no such person"),
                },
            },
            "post": {
                "summary": "Set people's custom fields and tags without an event (all or nothing)",
                "description": "Each profile is folded like an event, in the order of the "
                "log (last writer wins by timestamp, or the time received): a person not "
                "yet known is created. An upsert is no event: it is not listed, counted in "
                "eventCount or actions, nor changes firstSeen and lastSeen, and no "
                "event.matched webhook fires; segments see the fields it sets.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "a repeat within 24 h is accepted but stored once "
                        "(the keys of POST /api/v0/events and this are one namespace)",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _UPSERTS}}},
                },
                "responses": {
                    **ok("every profile's changes are committed to disk", "Accepted", "202"),
                    "400": bad,
                    "401": unauthorized,
                    "408": error("the body arrived too slowly"),
                    "413": error("the body or the number of profiles is over the limit"),
                    "415": error("the body is not JSON, or not gzip or plain"),
                    "422": error("the Idempotency-Key was used with another body"),
                    "429": error("the key is over its rate limit", **_RETRY),
                    "503": error("the store cannot take writes now", **_RETRY),
                },
            },
            "delete": {
                "summary": "Erase one person: profile, identifiers and events",
                "description": ONE_PERSON,
                "parameters": _PERSON,
                "responses": {
                    **ok("erased (or never known)", "Accepted", "202"),
                    "400": bad,
                    "401": unauthorized,
                    "503": error("the store cannot take writes now", **_RETRY),
                },
            },
        },
        "/api/v0/profiles/export": {
            "get": {
                "summary": "Export every profile of the account as NDJSON, by profile id",
                "description": "One ProfileView (as GET /api/v0/profiles answers) a "
                "line, streamed a page at a time; each page is read when it is sent, "
                "so a profile changed during the export shows its state at that "
                "moment. A stream that ends without its final chunk was cut short "
                "(the server failed mid-way): start again.",
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": DATE_TIME,
                        "description": "only profiles whose lastSeen is at or after it",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the profiles, one JSON object a line",
                        "content": {
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "lines of ProfileView",
                                }
                            }
                        },
                    },
                    "400": bad,
                    "401": unauthorized,
                    "503": error("the database cannot be read now", **_RETRY),
                },
            }
        },
        "/api/v0/profiles/{profile_id}": {
            "get": {
                "summary": "Read a profile by eventfold's own id (prof_…)",
                "description": "A profile that was merged into another answers 404 with "
                "mergedInto: the id of the profile it lives on in.",
                "parameters": [
                    {
                        "name": "profile_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^prof_[0-9]{1,18}$"},
                    }
                ],
                "responses": {
                    **ok("the profile", "ProfileView"),
                    "400": bad,
                    "401": unauthorized,
                    "404": error("no such profile, or merged into mergedInto"),
                },
            }
        },
    }
