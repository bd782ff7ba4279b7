"""One JSON error shape for every failure: ``{"message": ..., "errors"?: [...]}``."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from eventfold.errors import (
    EventfoldError,
    InvalidRequest,
    MergedAway,
    RetryLater,
    Unauthorized,
)
from eventfold.http.openapi import ErrorBody, FieldErrorBody
from eventfold.http.responses import json_response

logger = logging.getLogger("eventfold.http")

_HTTP_MESSAGES = {
    404: "no such endpoint; see docs/api.md for the paths eventfold serves",
    405: "this endpoint does not take that method",
}


def error_response(error: EventfoldError) -> Response:
    body = ErrorBody(error.message)
    headers: dict[str, str] = {}
    if isinstance(error, InvalidRequest):
        body.errors = [FieldErrorBody(e.path, e.message) for e in error.errors]
    if isinstance(error, MergedAway):
        body.mergedInto = error.merged_into
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RetryLater):
        headers["Retry-After"] = str(error.retry_after)
    return json_response(body, error.status, headers)


async def handle_eventfold_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, EventfoldError)
    response = error_response(error)
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        # The body may be unread (a 401, 413 or 415 answers before reading it), and what
        # is left of it must not be parsed as the connection's next request.
        response.headers["Connection"] = "close"
    return response


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = _HTTP_MESSAGES.get(error.status_code, error.detail)
    if error.status_code == 405 and error.headers and "Allow" in error.headers:
        message += f" (allowed: {error.headers['Allow']})"
    return json_response(ErrorBody(message), error.status_code, error.headers)


async def handle_unexpected_error(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    message = "internal error; nothing was stored. This is a bug in eventfold."
    return json_response(ErrorBody(message), 500)
