"""Ceiling (c): the least a server can do and still honour the contract of
``POST /api/v0/events``. Raw ASGI on uvicorn (uvloop, httptools; no Starlette); one
msgspec decode into Structs that check the whole seed contract; one writer thread that
appends each request's body as one row to SQLite (WAL, ``synchronous=FULL``), up to 64
requests a transaction, and answers 202 once that commit is durable. Nothing else: no
keys, no normalisation, no fold.

    python -m bench.minimal_server PORT DBFILE
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from itertools import groupby
from pathlib import Path
from typing import Annotated, Any

import msgspec

from eventfold.domain.languages import ISO_639_1

# The same rules as eventfold's (domain/identity.py, domain/languages.py), as patterns
# msgspec checks in C. A phone may carry spaces, dashes and parentheses between digits.
EMAIL = r"^\s*[^@\s\x00]+@[^@\s.\x00]+(?:\.[^@\s.\x00]+)+\s*\Z"
PHONE = r"^[ ()-]*\+[ ()-]*(?:[0-9][ ()-]*){4,15}\Z"
# By first letter ("b[aegimnors]|..."): 0.2 µs a match, where 183 alternatives take 0.5-1.2.
LOCALE = (
    r"(?i)^(?:"
    + "|".join(
        first + "[" + "".join(code[1] for code in codes) + "]"
        for first, codes in groupby(sorted(ISO_639_1), key=lambda code: code[0])
    )
    + r")\Z"
)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


# Untracked by the cyclic collector, as eventfold's own wire Structs are (a decoded body
# is a tree): the ceiling keeps every saving eventfold makes.
class StringField(msgspec.Struct, gc=False):
    key: Name
    values: list[Text]


class NumericField(msgspec.Struct, gc=False):
    key: Name
    values: list[float]


class DateField(msgspec.Struct, gc=False):
    key: Name
    values: list[datetime]


class Custom(msgspec.Struct, gc=False):
    string: list[StringField] = []
    numeric: list[NumericField] = []
    date: list[DateField] = []


class Product(msgspec.Struct, gc=False):
    id: Identifier | Int64
    custom: Custom | None = None
    quantity: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Event(msgspec.Struct, gc=False):
    action: Name
    email: Annotated[str, msgspec.Meta(max_length=254, pattern=EMAIL)] | None = None
    phoneNumber: Annotated[str, msgspec.Meta(pattern=PHONE)] | None = None
    profileId: Identifier | None = None
    locale: Annotated[str, msgspec.Meta(pattern=LOCALE)] | None = None
    products: list[Product] = []
    custom: Custom | None = None
    tags: list[Name] = []
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if self.email is None and self.phoneNumber is None:
            raise ValueError("an event needs an 'email' or a 'phoneNumber'")


class Batch(msgspec.Struct, gc=False):
    events: Annotated[list[Event], msgspec.Meta(max_length=5_000)]


DECODER = msgspec.json.Decoder(Batch)
MAX_BODY_BYTES = 10 * 1024 * 1024
GROUP = 64  # requests a transaction at most

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BatchWriter:
    """One thread that owns the SQLite connection and commits queued bodies in groups."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="batch-writer", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    async def append(self, body: bytes) -> None:
        """Returns once ``body`` is committed."""
        done = asyncio.get_running_loop().create_future()
        self._queue.put((body, done))
        await done

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, body BLOB)")
        self._ready.set()
        while (first := self._queue.get()) is not None:
            group = [first]
            while len(group) < GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(item)
            error: Exception | None = None
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(
                    "INSERT INTO batches (body) VALUES (?)", [(body,) for body, _ in group]
                )
                connection.execute("COMMIT")
            except sqlite3.Error as failed:
                error = failed
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            futures = [done for _, done in group]
            futures[0].get_loop().call_soon_threadsafe(_settle, futures, error)
        connection.close()


def _settle(futures: list[asyncio.Future[None]], error: Exception | None) -> None:
    for done in futures:
        if done.done():
            continue  # the client went away
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


class MinimalApp:
    """The ASGI app: 202 ``{}`` once stored, 400 ``{"message": ...}`` when invalid."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/api/v0/events" or scope["method"] != "POST":
            await _answer(send, 404, "POST event batches to /api/v0/events")
            return
        body = await _read_body(receive)
        if body is None:
            await _answer(send, 413, f"a body may hold at most {MAX_BODY_BYTES} bytes")
            return
        try:
            DECODER.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
            await _answer(send, 400, str(error))
            return
        await self._writer.append(body)
        await _answer(send, 202)


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body, or None when it is longer than MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            return None
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, message: str | None = None) -> None:
    body = b"{}" if message is None else msgspec.json.encode({"message": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


VALID_EVENT: dict[str, Any] = {
    "action": "purchase",
    "email": " Georgi@Releva.ai ",
    "locale": "BG",
    "products": [{"id": "123", "custom": {"string": [{"key": "color", "values": ["black"]}]}}],
    "custom": {"numeric": [{"key": "price", "values": [9.5]}]},
    "timestamp": "2024-05-01T10:00:00Z",
}
INVALID_EVENTS: dict[str, dict[str, Any]] = {
    "no email or phone": {"action": "view"},
    "bad email": {**VALID_EVENT, "email": "georgi@releva"},
    "bad phone": {"action": "view", "phoneNumber": "0888 123 456"},
    "bad locale": {**VALID_EVENT, "locale": "xx"},
    "locale with a newline": {**VALID_EVENT, "locale": "en\n"},
    "empty action": {**VALID_EVENT, "action": ""},
    "product without id": {**VALID_EVENT, "products": [{"custom": {}}]},
    "numeric field holding text": {
        **VALID_EVENT,
        "custom": {"numeric": [{"key": "price", "values": ["cheap"]}]},
    },
    "date field not a date": {
        **VALID_EVENT,
        "custom": {"date": [{"key": "born", "values": ["yesterday"]}]},
    },
    "bad timestamp": {**VALID_EVENT, "timestamp": "01/05/2024"},
}


def self_check(database: Path) -> dict[str, tuple[int, str, int]]:
    """Posts one valid batch and several invalid ones to the app, in-process; for each,
    the status, the message and how many batches the database then holds."""
    by_phone = {"action": "view", "phoneNumber": "+359 (88) 812-3456"}
    cases = {"valid": msgspec.json.encode({"events": [VALID_EVENT, by_phone]})}
    for name, event in INVALID_EVENTS.items():
        cases[name] = msgspec.json.encode({"events": [VALID_EVENT, event]})
    cases["not JSON"] = b'{"events": ['
    writer = BatchWriter(database)
    writer.start()
    app = MinimalApp(writer)
    answers: dict[str, tuple[int, str, int]] = {}
    try:
        for name, body in cases.items():
            status, text = asyncio.run(_post(app, body))
            stored = _stored(database)
            answers[name] = (status, text, stored)
    finally:
        writer.stop()
    return answers


async def _post(app: MinimalApp, body: bytes) -> tuple[int, str]:
    sent: list[Message] = []
    scope: Scope = {"type": "http", "method": "POST", "path": "/api/v0/events"}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    answer = msgspec.json.decode(sent[1]["body"])
    return sent[0]["status"], answer.get("message", "")


def _stored(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        count: int = connection.execute("SELECT count(*) FROM batches").fetchone()[0]
    connection.close()
    return count


def main() -> None:
    """Serves on the port given as the first argument, storing into the second."""
    import uvicorn

    port, database = int(sys.argv[1]), Path(sys.argv[2])
    writer = BatchWriter(database)
    writer.start()
    try:
        uvicorn.run(
            MinimalApp(writer),
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    finally:
        writer.stop()


if __name__ == "__main__":
    main()
