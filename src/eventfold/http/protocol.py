"""uvicorn's httptools protocol with two limits it lacks: the size of a request's head
(request line and headers) and the time a client may take to send it.

Without them a client can grow the server's memory by sending one endless header (seen:
a 50 MB header grew the process by 50 MB) or hold a connection open forever by sending
its headers a byte at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 10.0


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


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: a chunk that completes the head is not counted, and the
        # parser holds at most one chunk more than the limit before the refusal.
        if self._reading_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(_HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # An idle keep-alive connection is uvicorn's to time out; the next head is ours.
        self._reading_head = True
        self._head_bytes = 0

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
