"""The webhooks' part of the OpenAPI document: their paths, from the msgspec types the
server decodes and encodes (``domain/webhook_wire.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventfold.domain.webhook_wire import (
    DeliveryPage,
    ReplayAnswer,
    ReplayRequest,
    WebhookCreate,
    WebhookList,
    WebhookPatch,
    WebhookView,
)
from eventfold.http.openapi_rules import CURSOR_RULE

WEBHOOK_TYPES = (
    WebhookCreate,
    WebhookPatch,
    WebhookView,
    WebhookList,
    DeliveryPage,
    ReplayRequest,
    ReplayAnswer,
)
_ID = {
    "name": "webhook_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the endpoint's id (wh_…)",
}
_TYPES_TEXT = (
    "types: segment.entered, segment.exited, event.matched; segments narrows the segment "
    "types, actions narrows event.matched (absent or null: all). The URL must resolve to "
    "public addresses unless the server runs with EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE=true."
)


def webhook_paths(
    ref: str,
    error: Callable[[str], dict[str, Any]],
    bad: dict[str, Any],
    unauthorized: dict[str, Any],
) -> dict[str, Any]:
    """The paths of ``/api/v0/webhooks``; ``ref`` formats a schema's reference."""

    def body(name: str) -> dict[str, Any]:
        return {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref.format(name=name)}}},
        }

    def ok(description: str, name: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": ref.format(name=name)}}},
        }

    missing = error("no such webhook in this account")
    invalid_body = {
        "400": bad,
        "401": unauthorized,
        "408": error("the body arrived too slowly"),
        "413": error("the body is over 64 KiB"),
        "415": error("the body is not JSON"),
    }
    return {
        "/api/v0/webhooks": {
            "get": {
                "summary": "List the account's webhooks (secrets are not shown)",
                "responses": {"200": ok("the webhooks", "WebhookList"), "401": unauthorized},
            },
            "post": {
                "summary": "Create a webhook; the answer shows its signing secret, once",
                "description": _TYPES_TEXT,
                "requestBody": body("WebhookCreate"),
                "responses": {"201": ok("created, with its secret", "WebhookView"), **invalid_body},
            },
        },
        "/api/v0/webhooks/{webhook_id}": {
            "get": {
                "parameters": [_ID],
                "summary": "Read one webhook",
                "responses": {
                    "200": ok("the webhook", "WebhookView"),
                    "401": unauthorized,
                    "404": missing,
                },
            },
            "patch": {
                "parameters": [_ID],
                "summary": "Change a webhook's URL, filters or status (enabled | disabled)",
                "requestBody": body("WebhookPatch"),
                "responses": {
                    "200": ok("the webhook as changed", "WebhookView"),
                    **invalid_body,
                    "404": missing,
                },
            },
            "delete": {
                "parameters": [_ID],
                "summary": "Delete a webhook and its messages",
                "responses": {
                    "204": {"description": "deleted"},
                    "401": unauthorized,
                    "404": missing,
                },
            },
        },
        "/api/v0/webhooks/{webhook_id}/secret": {
            "post": {
                "parameters": [_ID],
                "summary": "Rotate the signing secret; the old one keeps signing beside it "
                "for 24 h (two signatures in webhook-signature)",
                "responses": {
                    "200": ok("the webhook with its new secret", "WebhookView"),
                    "401": unauthorized,
                    "404": missing,
                },
            },
        },
        "/api/v0/webhooks/{webhook_id}/deliveries": {
            "get": {
                "summary": "The webhook's messages, newest first, with every attempt",
                "parameters": [
                    _ID,
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": CURSOR_RULE,
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
                "responses": {
                    "200": ok("a page of deliveries", "DeliveryPage"),
                    "400": bad,
                    "401": unauthorized,
                    "404": missing,
                },
            },
        },
        "/api/v0/webhooks/{webhook_id}/replay": {
            "post": {
                "parameters": [_ID],
                "summary": "Queue again every message of the webhook created since a moment "
                "(the same message ids)",
                "requestBody": body("ReplayRequest"),
                "responses": {
                    "202": ok("how many messages were queued", "ReplayAnswer"),
                    **invalid_body,
                    "404": missing,
                },
            },
        },
    }
