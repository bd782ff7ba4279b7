"""One JSON error shape for every failure: ``{"message": ..., "errors"?: [...]}``."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventfold.errors import EventfoldError, InvalidRequest, RetryLater, Unauthorized

logger = logging.getLogger("eventfold.http")

_HTTP_MESSAGES = {
    404: "no such endpoint; see docs/api.md for the paths eventfold serves",
    405: "this endpoint does not take that method",
}


def error_response(error: EventfoldError) -> Response:
    body: dict[str, object] = {"message": error.message}
    headers: dict[str, str] = {}
    if isinstance(error, InvalidRequest) and error.errors:
        body["errors"] = [{"path": e.path, "message": e.message} for e in error.errors]
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RetryLater):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(body, status_code=error.status, headers=headers)


async def handle_eventfold_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, EventfoldError)
    return error_response(error)


async def handle_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = _HTTP_MESSAGES.get(error.status_code, error.detail)
    if error.status_code == 405 and error.headers and "Allow" in error.headers:
        message += f" (allowed: {error.headers['Allow']})"
    return JSONResponse({"message": message}, status_code=error.status_code, headers=error.headers)


async def handle_unexpected_error(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"message": "internal error; nothing was stored. This is a bug in eventfold."},
        status_code=500,
    )
