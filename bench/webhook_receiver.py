"""Local webhook receivers for the benchmark: an asyncio HTTP/1.1 server on its own
thread that answers 200 at once (recording each message's id and arrival time), or that
reads requests and never answers (a dead endpoint)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class BenchReceiver:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.arrivals: dict[str, float] = {}  # webhook-id -> first arrival (time.time())
        self.bodies: dict[str, bytes] = {}
        self.requests = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=512)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                message_id = headers.get("webhook-id", "")
                if message_id not in self.arrivals:
                    self.arrivals[message_id] = time.time()
                    self.bodies[message_id] = body
                if not self.answer:
                    continue  # a dead endpoint: the sender's timeout ends it
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


@contextmanager
def bench_receiver(answer: bool = True) -> Iterator[BenchReceiver]:
    receiver = BenchReceiver(answer)
    thread = threading.Thread(target=receiver.run, daemon=True)
    thread.start()
    receiver._ready.wait(10)
    try:
        yield receiver
    finally:
        receiver.stop()
        thread.join(5)
