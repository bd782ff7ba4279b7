"""uvicorn's httptools protocol with the limits and manners it lacks at the front door.

- The size of a request's head (request line and headers) and the time a client may take
  to send it. Without them a client can grow the server's memory by sending one endless
  header (seen: a 50 MB header grew the process by 50 MB) or hold a connection open
  forever by sending its headers a byte at a time.
- A cap on requests in flight in this process (``EVENTFOLD_MAX_CONCURRENT_REQUESTS``),
  past which a request gets a JSON 503 with ``Retry-After`` at once, so that the bodies
  being read cannot grow memory without bound.
- Lingering close. An error answered before the body was read (413, 401, 415, 503...)
  closes the connection while the client is still sending; closing a socket with unread
  data makes the kernel send a reset, and a client that sends its whole body before
  reading (Python's http.client, urllib, requests) then gets ``ECONNRESET`` instead of
  the answer. So, as Apache and nginx do, such a close sends the answer, shuts down the
  write side only, and reads and discards what the client still sends until it closes,
  or ``LINGER_MAX_BYTES`` or ``EVENTFOLD_LINGER_SECONDS`` run out.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn._types import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from eventfold.settings import Settings

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
# What a lingering close reads at most before closing anyway: a client still sending
# this much after its answer is not going to read it, and a fast one would otherwise cost
# the whole linger time of reading.
LINGER_MAX_BYTES = 64 * 1024 * 1024
BUSY_RETRY_AFTER_SECONDS = 1


def _json_answer(status: bytes, message: str) -> bytes:
    body = ('{"message": "' + message + '"}').encode("ascii")
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


_HEAD_TOO_LARGE = _json_answer(
    b"431 Request Header Fields Too Large",
    f"the request line and headers are larger than {MAX_HEAD_BYTES // 1024} KiB; "
    "send smaller headers",
)
_HEAD_TOO_SLOW = _json_answer(
    b"408 Request Timeout",
    f"the request's headers did not arrive within {HEAD_TIMEOUT_SECONDS:g} seconds",
)


@functools.cache
def _settings() -> Settings:
    # uvicorn builds the protocol, not eventfold: it reads the same EVENTFOLD_* settings
    # that `eventfold serve` exported for the app, once per process.
    return Settings.from_env()


@functools.cache
def _busy_app(max_requests: int) -> ASGI3Application:
    body = (
        f'{{"message": "the server is already handling {max_requests} requests; nothing was '
        f'stored, retry after {BUSY_RETRY_AFTER_SECONDS} second"}}'
    ).encode("ascii")

    async def busy(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"retry-after", str(BUSY_RETRY_AFTER_SECONDS).encode("ascii")),
            (b"connection", b"close"),  # the body is unread: close (lingering) after it
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return busy


class _RequestsInFlight:
    """Requests of this process from admission until their answer is sent: a request's
    task goes on after that (logging), and the connection's next request may arrive
    before it ends, so counting tasks would refuse a client that sends one at a time."""

    def __init__(self) -> None:
        self.count = 0

    def counted(self, app: ASGI3Application) -> ASGI3Application:
        self.count += 1  # at admission, before the task runs: heads arrive in bursts

        async def handle(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            answered = False

            async def send_and_count(message: ASGISendEvent) -> None:
                nonlocal answered
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    answered = True  # uvicorn refuses a second last body
                    self.count -= 1

            try:
                await app(scope, receive, send_and_count)
            finally:
                if not answered:
                    self.count -= 1

        return handle


_requests_in_flight = _RequestsInFlight()


class _LingeringTransport:
    """The transport as uvicorn's code sees it: its ``close()`` asks the protocol, which
    lingers when the client may still be sending; everything else is the real one's."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol):
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if not self._protocol.lingering:  # the write side is shut down
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        self._protocol.close_after_answer()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self._max_requests = settings.max_concurrent_requests
        self._linger_seconds = settings.linger_seconds
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._between_messages = True
        self._wire: asyncio.Transport | None = None  # the real transport
        self.lingering = False
        self._drained = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._wire = transport
        super().connection_made(cast(asyncio.Transport, _LingeringTransport(transport, self)))
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._drained += len(data)
            if self._drained > LINGER_MAX_BYTES:
                self._close_wire()
            return
        super().data_received(data)
        # Counted after parsing: a chunk that completes the head is not counted, and the
        # parser holds at most one chunk more than the limit before the refusal.
        if self._reading_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._between_messages = False
        self._reading_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._between_messages = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # An idle keep-alive connection is uvicorn's to time out; the next head is ours.
        self._reading_head = True
        self._head_bytes = 0

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn's own limit_concurrency counts idle connections and finishing tasks too,
        # and answers in plain text.
        if _requests_in_flight.count >= self._max_requests:
            app = _busy_app(self._max_requests)
        else:
            app = _requests_in_flight.counted(app)
        super()._start_asgi_task(cycle, app)

    def close_after_answer(self) -> None:
        """Closes the connection, lingering first when the client may still be sending:
        within a request (its body unread), or with requests or bytes not yet read."""
        if self._wire is None or self._wire.is_closing():
            return
        if self.lingering or (self._between_messages and not self.flow.read_paused):
            self._close_wire()
            return
        self.lingering = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        if self.cycle is not None and not self.cycle.response_complete:
            # A request still being handled will get no answer: tell its app so.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._wire.write_eof()  # sent after the answer still buffered
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self._linger_seconds, self._close_wire)

    def _close_wire(self) -> None:
        if self._wire is not None:
            self._wire.close()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            HEAD_TIMEOUT_SECONDS, self._refuse_if_still_reading_head
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse_if_still_reading_head(self) -> None:
        self._head_timer = None
        if self._reading_head:
            self._refuse(_HEAD_TOO_SLOW)

    def _refuse(self, answer: bytes) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()
