"""Request ids, one log line per request, and request metrics, as one ASGI middleware."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventfold.observability import metrics

logger = logging.getLogger("eventfold.request")
MAX_REQUEST_ID_LENGTH = 128


class RequestLogMiddleware:
    """Takes ``X-Request-Id`` (or makes one), returns it, logs and counts the request.

    Handlers add what they know to ``request.state`` (``account``, ``events``); the
    log line never holds the key or the body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route = _route_of(scope)
            metrics.observe_request(route, scope["method"], status, duration)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "account": state.get("account"),
                    "events": state.get("events"),
                    "request_id": request_id,
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")
            if 0 < len(given) <= MAX_REQUEST_ID_LENGTH and given.isprintable():
                return given
    return uuid.uuid4().hex


def _route_of(scope: Scope) -> str:
    """The matched route's path (few distinct values for metrics), or "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return str(path) if path is not None else "unmatched"
