"""A load of our own for the figures users feel: 100-event batches from a pool of distinct
bodies (so that the fold meets many people, as in a shop), either paced at a target rate
whatever the server answers (an open loop: wrk's connections each wait for their answer,
so wrk cannot offer less than one connection's worth), or as fast as ``connections``
connections go, for a duration or once through the pool.

It runs in a process of its own (``run_load``), so that it shares no GIL with the
freshness probe; that process prints ``ready`` once its connections are open, then one
line of JSON (``LoadCounts``). HTTP/1.1 over asyncio streams, requests encoded once:
0.1 ms of CPU a request as fast as it goes, 0.5 ms paced (timer wake-ups), measured;
at 60 requests/s (6,000 events/s) a few percent of a core.

    python -m bench.paced --url http://127.0.0.1:8000 --key efsk_... --bodies DIR \\
        --rate 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.batches import batch_body

EVENTS_PER_BATCH = 100
# Connections a paced load may have open at once: a batch due while all are busy is not
# sent (counted as ``unsent``): the server then sets the pace, not the target.
MAX_CONNECTIONS = 64
_FINISH_SECONDS = 60.0  # how long requests in flight at the end may take
# eventfold serve closes keep-alive connections idle for 5 s (uvicorn's
# timeout_keep_alive); one idle longer than this is closed here instead of reused, or
# its next request would fail on a connection the server has just closed.
_IDLE_SECONDS = 4.0
# A connection that fails so, or answers what is not HTTP, counts as a failed request.
_BROKEN = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


def write_bodies(folder: Path, count: int) -> Path:
    """``count`` distinct 100-event bodies (realistic events of 10,000 people) in files
    ``folder/batch-<n>.json``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        path = folder / f"batch-{number}.json"
        if not path.exists():
            path.write_bytes(batch_body(EVENTS_PER_BATCH, seed=number + 1))
    return folder


@dataclass
class LoadCounts:
    """What a load sent and what the server answered; rates are per ``seconds``."""

    seconds: float
    target_events_per_second: float | None  # None: as fast as the connections go
    connections: int  # the most that were open at once
    sent: int = 0  # batches
    unsent: int = 0  # batches due while every connection was busy
    accepted: int = 0  # 202
    refused: int = 0  # 503 (the fold or the writer behind, or too many requests)
    failed: int = 0  # other answers and socket errors
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def accepted_events_per_second(self) -> float:
        return self.accepted * EVENTS_PER_BATCH / self.seconds

    def figures(self) -> dict[str, float | int | None]:
        """The counts and rates, for JSON (without the latencies themselves)."""
        shown: dict[str, float | int | None] = {
            k: v for k, v in asdict(self).items() if k != "latencies_ms"
        }
        shown["accepted_events_per_second"] = round(self.accepted_events_per_second)
        return shown


def run_load(
    url: str,
    secret: str,
    bodies: Path,
    count: int,
    *,
    rate: float | None = None,
    seconds: float | None = None,
    connections: int = MAX_CONNECTIONS,
    on_ready: Callable[[], None] | None = None,
) -> LoadCounts:
    """Runs this module in a new process: ``count`` bodies of ``bodies``, paced at ``rate``
    events/s for ``seconds``, or (without ``rate``) as fast as ``connections`` go, for
    ``seconds`` or else once through the bodies; ``on_ready`` is called once the load's
    connections are open, just before it starts."""
    command = [sys.executable, "-m", "bench.paced", "--url", url, "--key", secret]
    command += ["--bodies", str(bodies), "--count", str(count)]
    command += ["--connections", str(connections)]
    if rate is not None:
        command += ["--rate", str(rate)]
    if seconds is not None:
        command += ["--seconds", str(seconds)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        if first.strip() != "ready":
            process.kill()
            raise RuntimeError(f"the load process did not start: {first!r}")
        if on_ready is not None:
            on_ready()
        last = process.stdout.read()
        if process.wait() != 0:
            raise RuntimeError(f"the load process failed ({process.returncode})")
    figures = json.loads(last)
    return LoadCounts(**figures)


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs pre-encoded requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.reusable = True
        self.idle_since = asyncio.get_running_loop().time()

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        """Sends one request, reads its answer; returns the status."""
        self._writer.write(request)
        await self._writer.drain()
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                self.reusable = False
        if length:
            await self._reader.readexactly(length)
        return status

    def close(self) -> None:
        self.reusable = False
        self._writer.close()


class _Load:
    def __init__(self, url: str, secret: str, bodies: list[bytes], counts: LoadCounts) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} names no host and port")
        self._host, self._port = parts.hostname, parts.port
        self._requests = [_request(parts.hostname, parts.port, secret, body) for body in bodies]
        self.counts = counts
        self._idle: list[_Connection] = []
        self._open = 0

    async def warm_up(self, connections: int) -> None:
        for _ in range(connections):
            self._idle.append(await _Connection.open(self._host, self._port))
        self._open = len(self._idle)
        self.counts.connections = self._open

    async def _send(self, number: int, connection: _Connection | None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        counts = self.counts
        try:
            if connection is None:
                connection = await _Connection.open(self._host, self._port)
            status = await connection.send(self._requests[number % len(self._requests)])
        except _BROKEN:
            counts.failed += 1
            if connection is not None:
                connection.close()
            self._open -= 1
            return
        counts.latencies_ms.append((loop.time() - started) * 1000)
        if status == 202:
            counts.accepted += 1
        elif status == 503:
            counts.refused += 1
        else:
            counts.failed += 1
        if connection.reusable:
            connection.idle_since = loop.time()
            self._idle.append(connection)
        else:
            connection.close()
            self._open -= 1

    def _take(self, most: int) -> tuple[bool, _Connection | None]:
        """An idle connection, or (True, None) when a new one may be opened."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < _IDLE_SECONDS:
                return True, connection
            connection.close()
            self._open -= 1
        if self._open < most:
            self._open += 1
            self.counts.connections = max(self.counts.connections, self._open)
            return True, None
        return False, None

    async def paced(self, rate: float, seconds: float) -> None:
        """A batch every ``EVENTS_PER_BATCH / rate`` seconds, on a fixed schedule."""
        loop = asyncio.get_running_loop()
        interval = EVENTS_PER_BATCH / rate
        tasks: set[asyncio.Task[None]] = set()
        started = loop.time()
        number = 0
        while (due := started + number * interval) < started + seconds:
            # Sleeps (or only yields, when late) so that answers are read meanwhile.
            await asyncio.sleep(max(0.0, due - loop.time()))
            free, connection = self._take(MAX_CONNECTIONS)
            if free:
                self.counts.sent += 1
                task = asyncio.create_task(self._send(number, connection))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                self.counts.unsent += 1
            number += 1
        if tasks:
            await asyncio.wait(tasks, timeout=_FINISH_SECONDS)

    async def closed(self, connections: int, seconds: float | None) -> None:
        """Each connection sends its next batch when the last is answered: for
        ``seconds``, or else once through the bodies."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        numbers = itertools.count() if seconds is not None else iter(range(len(self._requests)))

        async def client() -> None:
            for number in numbers:
                if deadline is not None and loop.time() >= deadline:
                    return
                free, connection = self._take(connections)
                if not free:
                    return
                self.counts.sent += 1
                await self._send(number, connection)

        await asyncio.gather(*(client() for _ in range(connections)))

    def close(self) -> None:
        for connection in self._idle:
            connection.close()


def _request(host: str, port: int, secret: str, body: bytes) -> bytes:
    head = (
        f"POST /api/v0/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))], 1)


async def _main(args: argparse.Namespace) -> LoadCounts:
    files = [args.bodies / f"batch-{n}.json" for n in range(args.count)]
    bodies = [path.read_bytes() for path in files]
    loop = asyncio.get_running_loop()
    counts = LoadCounts(args.seconds or 0.0, args.rate, connections=0)
    load = _Load(args.url, args.key, bodies, counts)
    await load.warm_up(min(args.connections, 8 if args.rate else args.connections))
    print("ready", flush=True)
    started = loop.time()
    try:
        if args.rate is not None:
            await load.paced(args.rate, args.seconds)
        else:
            await load.closed(args.connections, args.seconds)
    finally:
        load.close()
    if args.seconds is None or args.rate is None:
        counts.seconds = round(loop.time() - started, 3)
    ordered = sorted(counts.latencies_ms)
    counts.p50_ms = _percentile(ordered, 0.5)
    counts.p99_ms = _percentile(ordered, 0.99)
    counts.max_ms = round(ordered[-1], 1) if ordered else 0.0
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="a folder of write_bodies")
    parser.add_argument("--count", type=int, required=True, help="bodies to use from it")
    parser.add_argument("--rate", type=float, help="events/s (paced; needs --seconds)")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS)
    args = parser.parse_args()
    if args.rate is not None and args.seconds is None:
        parser.error("--rate needs --seconds")
    counts = asyncio.run(_main(args))
    figures = asdict(counts)
    del figures["latencies_ms"]
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
