"""``/debugger``: a live view of an account's events, and the stream behind it.

The stream is server-sent events read with ``fetch`` (not ``EventSource``), so that the
key travels in the Authorization header and never in a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import resources

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from eventfold.bootstrap import Services
from eventfold.http.principal import authenticate
from eventfold.storage.base import Principal

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 5.0
_encoder = msgspec.json.Encoder()
_PAGES = resources.files("eventfold.http")
_DEBUGGER = _PAGES.joinpath("debugger.html").read_text("utf-8")
_REFERENCE = _PAGES.joinpath("reference.html").read_text("utf-8")


async def debugger_page(request: Request) -> Response:
    return HTMLResponse(_DEBUGGER, headers={"Cache-Control": "no-store"})


async def reference_page(request: Request) -> Response:
    """``/docs``: the OpenAPI document rendered in the browser, with no outside assets."""
    return HTMLResponse(_REFERENCE)


async def debugger_stream(request: Request) -> Response:
    principal = await authenticate(request)
    return StreamingResponse(
        _feed(request, principal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


async def _feed(request: Request, principal: Principal) -> AsyncIterator[bytes]:
    services: Services = request.app.state.services
    feed = services.debug_feed
    cursor = await run_in_threadpool(feed.start, principal)
    yield b"event: ready\ndata: {}\n\n"
    quiet = 0.0
    while not await request.is_disconnected():
        sent = False
        # Database reads, off the event loop like the API's other reads.
        happened = await run_in_threadpool(lambda: list(feed.poll(principal, cursor)))
        for kind, data in happened:
            yield b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"
            sent = True
        quiet = 0.0 if sent else quiet + POLL_SECONDS
        if quiet >= HEARTBEAT_SECONDS:
            quiet = 0.0
            yield b": still here\n\n"
        await asyncio.sleep(POLL_SECONDS)
