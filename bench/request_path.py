"""Where the request path's CPU goes: ``POST /api/v0/events`` (100-event batches, 32
requests at a time) through the whole ASGI app in this process, on a fresh SQLite file
with the fold off, without sockets or HTTP parsing; the process's CPU µs an event, for
the whole path and with parts of it left out.

    python -m bench.request_path [ROUNDS]

The parts left out are measured by difference, so each row names what it skips:
``validation`` answers every request with the batch validated once before the load;
``append`` answers without storing (no group commit, no SQLite). Rows alternate ROUNDS
times (default 3), so a drifting machine shows. It imports whichever eventfold is first
on the path: ``PYTHONPATH=.:$TREE/src`` measures another tree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from bench.batches import batch_body
from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.garbage_collection import tune_for_the_fold
from eventfold.http.app import create_app
from eventfold.observability.logs import configure_logging
from eventfold.settings import Settings

CONCURRENT = 32
REQUESTS_EACH = 40  # per concurrent client and round
EVENTS = 100
SKIPPABLE = ("validation", "append")


def path_cost(folder: Path, skip: tuple[str, ...], requests_each: int = REQUESTS_EACH) -> float:
    """CPU µs an event for ``requests_each`` requests from each of CONCURRENT clients,
    after a warm-up, with the parts in ``skip`` left out; raises unless every request
    was answered 202."""
    settings = Settings(
        database_url=f"sqlite:///{folder / 'requests.db'}",
        fold_in_server=False,
        deliver_in_server=False,
        # The fold is off: without these, backpressure would refuse after a few seconds.
        max_fold_lag_seconds=1e9,
        max_fold_lag_events=10**12,
    )
    services = build_services(settings)
    app = create_app(services)
    body = batch_body(EVENTS)
    secret = services.storage.create_key("bench", now_ms())[1]
    ingest: Any = services.ingest  # its parts are replaced below, for this measurement only
    # A part renamed would be "replaced" silently and the row would measure it after all.
    if not hasattr(ingest._validator, "validate_batch") or not hasattr(ingest._log, "append"):
        raise RuntimeError("the parts bench.request_path leaves out are gone: update it")
    if "validation" in skip:
        validated = ingest._validator.validate_batch(body, now_ms())
        ingest._validator.validate_batch = lambda _body, _at: validated
    if "append" in skip:

        async def stored(*_: Any, **__: Any) -> bool:
            return True

        ingest._log.append = stored
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {secret}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    try:
        return uvloop.run(_load(app, headers, body, requests_each))
    finally:
        services.storage.close()


async def _load(
    app: Callable[..., Awaitable[None]],
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    requests_each: int,
) -> float:
    async def post() -> None:
        delivered = False
        answers: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays: no disconnect
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answers.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v0/events",
            "raw_path": b"/api/v0/events",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)
        if answers != [202]:
            raise RuntimeError(f"the request was answered {answers}, not 202")

    async def client(requests: int) -> None:
        for _ in range(requests):
            await post()

    await asyncio.gather(*(client(requests_each // 4) for _ in range(CONCURRENT)))  # warm-up
    started = time.process_time()
    await asyncio.gather(*(client(requests_each) for _ in range(CONCURRENT)))
    return (time.process_time() - started) / (CONCURRENT * requests_each * EVENTS) * 1e6


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    tune_for_the_fold()  # the garbage collector as a server process sets it
    # The request log is written as a server writes it, to nowhere.
    configure_logging("json", verbose=False)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (open for the run)
    variants: list[tuple[str, ...]] = [(), ("validation",), ("append",), SKIPPABLE]
    for number in range(1, rounds + 1):
        costs = []
        for skip in variants:
            with tempfile.TemporaryDirectory() as folder:
                costs.append(path_cost(Path(folder), skip))
        shown = ", ".join(
            f"{'without ' + ' and '.join(skip) if skip else 'whole'} {cost:.2f}"
            for skip, cost in zip(variants, costs, strict=True)
        )
        print(f"round {number}: CPU µs an event: {shown}", flush=True)


if __name__ == "__main__":
    main()
