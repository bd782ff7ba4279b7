"""The OpenAPI 3.1 document, generated from the msgspec types the server decodes and
encodes, so that it cannot drift from what the server does."""

from __future__ import annotations

from typing import Any

import msgspec

from eventfold import __version__
from eventfold.domain.events import WireTypes
from eventfold.domain.profile import ProfileView
from eventfold.domain.upserts import MAX_PROFILES_PER_REQUEST, UpsertTypes
from eventfold.http.openapi_profiles import profile_paths
from eventfold.http.openapi_rules import (
    CURSOR_RULE,
    DATE_TIME,
    apply_event_rules,
    apply_segment_rules,
    apply_upsert_rules,
    apply_webhook_rules,
    person_parameters,
    stored_event,
)
from eventfold.http.openapi_segments import SEGMENT_TYPES, segment_paths, segment_schemas

REF = "#/components/schemas/{name}"


class FieldErrorBody(msgspec.Struct):
    path: str
    message: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error answer: what is wrong and how to fix it."""

    message: str
    errors: list[FieldErrorBody] = []
    # A profile id merged into another: the id to ask for instead (404 only).
    mergedInto: str | None = None


class Lag(msgspec.Struct):
    events: int
    seconds: float
    quarantined: int = 0  # events set aside by the fold (eventfold fold quarantine list)


class FoldLoop(msgspec.Struct):
    """The fold loops of this process, where it runs them, or of the child process its
    fold runs in, as the child reports them each second (not running while the child is
    down; failing when its report is more than 5 s old, or none came within 30 s of its
    start)."""

    running: bool
    failingForSeconds: float
    lastError: str | None


class SegmentLoopsView(msgspec.Struct):
    """The segments' backfill and timer of this process, where it runs them, or of the
    child process its fold runs in (as the child reports them; the timer's lag is read
    from the database)."""

    running: bool
    failingForSeconds: float
    lastError: str | None
    # Seconds since the earliest re-evaluation that is due and has not run (null: unknown).
    timerLagSeconds: float | None


class DeliveryLoopHealth(msgspec.Struct):
    """The webhook delivery loop of this process, where it runs one."""

    running: bool
    failingForSeconds: float
    lastError: str | None


class Deliveries(msgspec.Struct):
    """The webhooks' outbox (null when the database cannot tell) and delivery loop."""

    pending: int | None  # messages not delivered yet
    failed: int | None  # messages whose retries ran out, listed for replay
    lagSeconds: float | None  # how late the most overdue message is
    loop: DeliveryLoopHealth | None


class Health(msgspec.Struct):
    status: str
    lag: Lag | None
    fold: FoldLoop | None = None
    segments: SegmentLoopsView | None = None
    deliveries: Deliveries | None = None


class Readiness(msgspec.Struct):
    status: str
    database: str
    lag: Lag | None
    message: str


class Accepted(msgspec.Struct, forbid_unknown_fields=True):
    """The answer to an accepted request: an empty object."""


class EventPage(msgspec.Struct):
    events: list[dict[str, Any]]
    nextCursor: str | None


def _error(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
    }
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return answer


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(name=schema)}}},
        }
    }


_UNAUTHORIZED = _error(
    "missing, malformed, unknown or revoked key", **{"WWW-Authenticate": "Bearer"}
)
_BAD = _error("a malformed request; the message names the field")
_RETRY = {"Retry-After": "seconds to wait before retrying"}
_PERSON_FILTER = person_parameters("(at most one of email, phoneNumber, profileId)")


def build_openapi(
    types: WireTypes, max_events_per_batch: int, upserts: UpsertTypes
) -> dict[str, Any]:
    """The document served at ``/openapi.json`` (with the configured batch limit)."""
    from eventfold.http.openapi_webhooks import WEBHOOK_TYPES, webhook_paths  # imports this

    _, schemas = msgspec.json.schema_components(
        [
            types.batch,
            upserts.request,
            ProfileView,
            ErrorBody,
            Health,
            Readiness,
            Accepted,
            EventPage,
            *SEGMENT_TYPES,
            *WEBHOOK_TYPES,
        ],
        ref_template=REF,
    )
    segment_schemas(schemas)
    # Events and products keep fields the API does not know; one identifier is required.
    for name in ("Event", "Product"):
        schemas[name].pop("additionalProperties", None)
    apply_event_rules(schemas)
    # Said, not a maxItems: a batch over the limit is a 413 (like a body over the byte
    # limit), where a request that breaks the schema is a 400.
    schemas["Batch"]["description"] = (
        f"At most {max_events_per_batch} events (more: 413); all or nothing."
    )
    apply_upsert_rules(schemas, MAX_PROFILES_PER_REQUEST)
    apply_segment_rules(schemas)
    apply_webhook_rules(schemas)
    schemas["EventPage"]["properties"]["events"]["items"] = stored_event(schemas["Event"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventfold Custom Event API", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            **segment_paths(_ok, _error, _BAD, _UNAUTHORIZED),
            "/api/v0/events": {
                "post": {
                    "summary": "Store a batch of custom events (all or nothing)",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            "description": "a repeat within 24 h is accepted but stored once",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": REF.format(name="Batch")}}
                        },
                    },
                    "responses": {
                        **_ok("every event is committed to disk", "Accepted", "202"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                        "408": _error("the body arrived too slowly"),
                        "413": _error("the body or the number of events is over the limit"),
                        "415": _error("the body is not JSON, or not gzip or plain"),
                        "422": _error("the Idempotency-Key was used with another body"),
                        "429": _error("the key is over its rate limit", **_RETRY),
                        "503": _error("the store cannot take writes now", **_RETRY),
                    },
                },
                "get": {
                    "summary": "List the account's stored events, newest (or oldest) first",
                    "description": "Narrowed to one person by at most one of email, "
                    "phoneNumber and profileId (OpenAPI cannot say 'at most one of'; "
                    "the server answers 400 when several are given).",
                    "parameters": [
                        {
                            "name": "order",
                            "in": "query",
                            "required": False,
                            "description": "desc (newest first, the default) or asc (oldest "
                            "first); a cursor continues the order it was given for",
                            "schema": {"type": "string", "enum": ["desc", "asc"]},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": CURSOR_RULE,
                        },
                        {
                            "name": "eventTypes[]",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "array", "items": {"type": "string"}},
                            "style": "form",
                            "explode": True,
                        },
                        {
                            "name": "startDateTime",
                            "in": "query",
                            "required": False,
                            "schema": DATE_TIME,
                        },
                        {
                            "name": "endDateTime",
                            "in": "query",
                            "required": False,
                            "schema": DATE_TIME,
                        },
                        *_PERSON_FILTER,
                    ],
                    "responses": {
                        **_ok("a page of events", "EventPage"),
                        "400": _BAD,
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            **profile_paths(_ok, _error, _BAD, _UNAUTHORIZED),
            **webhook_paths(REF, _error, _BAD, _UNAUTHORIZED),
            "/healthz": {
                "get": {
                    "summary": "Liveness, the fold's lag and the webhooks' outbox",
                    "security": [],
                    "responses": _ok("the process is up", "Health"),
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the database answers and the fold keeps up",
                    "security": [],
                    "responses": {
                        **_ok("ready", "Readiness"),
                        "503": {
                            "description": "not ready",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": REF.format(name="Readiness")}
                                }
                            },
                        },
                    },
                }
            },
            "/debugger": {
                "get": {
                    "summary": "The live event debugger page (HTML; the key is entered in it)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/docs": {
                "get": {
                    "summary": "This document, rendered as a page (HTML, no outside assets)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the page",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/api/v0/debugger/stream": {
                "get": {
                    "summary": "The account's events as they are accepted, folded or rejected, "
                    "as server-sent events (accepted, folded, rejected); never ends",
                    "responses": {
                        "200": {
                            "description": "the stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": _UNAUTHORIZED,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
