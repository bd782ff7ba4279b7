"""Real HTTP receivers for webhook tests: a server on a free local port, on a thread,
that records every request and answers as the test says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0  # wait this long before answering


Policy = Callable[[int, Received], Answer]  # (how many arrived before this one, request)


def always(status: int) -> Policy:
    return lambda index, request: Answer(status)


class Receiver:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = Received(
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.time(),
                )
                with receiver._lock:
                    index = len(receiver.requests)
                    receiver.requests.append(request)
                answer = receiver.policy(index, request)
                if answer.delay_seconds:
                    time.sleep(answer.delay_seconds)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """The requests, once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"{len(self.requests)} requests arrived, expected {count}")


@contextmanager
def receiving(policy: Policy | None = None) -> Iterator[Receiver]:
    """A receiver answering as ``policy`` says (200 to everything by default)."""
    receiver = Receiver(policy or always(200))
    thread = threading.Thread(target=receiver._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
        receiver._server.server_close()
