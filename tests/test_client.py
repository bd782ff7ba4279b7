"""The SDK against a real `eventfold serve`: batching, local validation, safe retries
through 503 and 429 periods, bounded buffers, and flushing at exit."""

from __future__ import annotations

import asyncio
import http.server
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.processes import create_key, read_all_events, wait_for_fold

from eventfold.client import AsyncClient, Client, ClientError, InvalidEvent, QueueFull
from eventfold.client.core import RetryPolicy
from tests.servers import Served, served

FAST_RETRY = RetryPolicy(max_retries=30, base_seconds=0.05, cap_seconds=0.5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path, env={"EVENTFOLD_SQLITE_BUSY_TIMEOUT_MS": "50"}) as running:
        yield running


def stored_markers(server: Served, secret: str | None = None) -> Counter[str]:
    """How often each event's ``n`` field is stored, read through the API once folded
    (the fold lists them, a few milliseconds after their 202)."""
    wait_for_fold(server.url)
    return Counter(str(e["n"]) for e in read_all_events(server.url, secret or server.secret))


def accepted_batches(server: Served) -> float:
    text = httpx2.get(f"{server.url}/metrics").text
    name = "eventfold_batch_size_events_count"
    found = next(line for line in text.splitlines() if line.startswith(name))
    return float(found.split()[-1])


def test_events_are_sent_in_batches_and_flush_blocks_until_sent(server: Served) -> None:
    with Client(server.url, server.secret, batch_size=100, flush_interval=60) as client:
        for n in range(250):
            client.track("view", email=f"p{n % 7}@b.co", n=n, products=[{"id": n}])
        assert client.flush(timeout=30)
        assert sum(stored_markers(server).values()) == 250
    assert accepted_batches(server) == 3  # 100 + 100 + the 50 that flush sent


def test_a_partial_batch_goes_out_after_the_flush_interval(server: Served) -> None:
    with Client(server.url, server.secret, batch_size=100, flush_interval=0.2) as client:
        client.track("view", email="a@b.co", n=1)
        deadline = time.monotonic() + 5
        while not stored_markers(server):
            assert time.monotonic() < deadline, "the partial batch was never sent"
            time.sleep(0.05)


def test_an_invalid_event_raises_at_once_with_the_field(server: Served) -> None:
    with Client(server.url, server.secret) as client:
        with pytest.raises(InvalidEvent, match="email") as caught:
            client.track("view", email="not-an-email")
        assert caught.value.errors[0].path == "events[0].email"
        with pytest.raises(InvalidEvent, match=r"email.*phoneNumber"):
            client.track("view")


def test_retries_through_503s_deliver_every_event_exactly_once(server: Served) -> None:
    lock = sqlite3.connect(server.database, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # the server now answers 503: database locked
    unlock = threading.Timer(1.5, lambda: lock.execute("ROLLBACK"))
    unlock.start()
    with Client(server.url, server.secret, batch_size=50, retry=FAST_RETRY) as client:
        for n in range(300):
            client.track("buy", email="a@b.co", n=n)
        assert client.flush(timeout=60)
    unlock.join()
    lock.close()
    assert stored_markers(server) == Counter({str(n): 1 for n in range(300)})


def test_retries_honour_429_and_deliver_every_event_exactly_once(server: Served) -> None:
    limited = create_key(f"sqlite:///{server.database}", account="default", rate_limit=200)
    with Client(server.url, limited, batch_size=100, retry=FAST_RETRY) as client:
        started = time.monotonic()
        for n in range(600):
            client.track("buy", email="a@b.co", n=n)
        assert client.flush(timeout=60)
        elapsed = time.monotonic() - started
    assert stored_markers(server, limited) == Counter({str(n): 1 for n in range(600)})
    assert elapsed > 1.5  # 600 events at 200/s, after a first overdraft: 429s were waited out


def test_refused_batches_are_not_retried_and_reach_on_error(server: Served) -> None:
    failures: list[tuple[int, Exception]] = []
    with Client(
        "http://127.0.0.1:" + str(server.port),
        "efsk_wrong-key",
        retry=FAST_RETRY,
        on_error=lambda events, error: failures.append((len(events), error)),
    ) as client:
        client.track("view", email="a@b.co")
        client.flush(timeout=10)
    [(count, error)] = failures
    assert count == 1
    assert isinstance(error, ClientError)
    assert error.status == 401


def test_a_full_buffer_drops_to_on_error_or_blocks(server: Served) -> None:
    dropped: list[Exception] = []
    hold = sqlite3.connect(server.database, isolation_level=None)
    hold.execute("BEGIN EXCLUSIVE")  # nothing gets through while we fill the buffer
    client = Client(
        server.url,
        server.secret,
        batch_size=1,
        max_queue=5,
        on_full="drop",
        retry=FAST_RETRY,
        on_error=lambda events, error: dropped.append(error),
    )
    for n in range(50):
        client.track("view", email="a@b.co", n=n)
    assert dropped
    assert all(isinstance(error, QueueFull) for error in dropped)
    hold.execute("ROLLBACK")
    hold.close()
    client.close()
    assert sum(stored_markers(server).values()) + len(dropped) == 50


def test_events_left_at_interpreter_exit_are_sent(server: Served, tmp_path: Path) -> None:
    script = (
        "from eventfold.client import Client\n"
        f"client = Client({server.url!r}, {server.secret!r}, flush_interval=60)\n"
        "for n in range(30):\n"
        "    client.track('exit', email='a@b.co', n=n)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sum(stored_markers(server).values()) == 30


def test_async_client_batches_retries_and_flushes(server: Served) -> None:
    async def scenario() -> None:
        lock = sqlite3.connect(server.database, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        async with AsyncClient(
            server.url, server.secret, batch_size=40, retry=FAST_RETRY
        ) as client:
            for n in range(200):
                await client.track("view", email="a@b.co", n=n)
            await asyncio.sleep(1.0)
            lock.execute("ROLLBACK")
            await client.flush()
            with pytest.raises(InvalidEvent):
                await client.track("view", phone_number="12")
        lock.close()

    asyncio.run(scenario())
    assert stored_markers(server) == Counter({str(n): 1 for n in range(200)})


def test_async_client_reports_dropped_events(server: Served) -> None:
    dropped: list[Sequence[Any]] = []

    async def scenario() -> None:
        client = AsyncClient(
            server.url,
            server.secret,
            max_queue=2,
            on_full="drop",
            on_error=lambda events, error: dropped.append(events),
        )
        for n in range(20):  # the sending task gets no turn in between
            await client.track("view", email="a@b.co", n=n)
        await client.aclose()

    asyncio.run(scenario())
    assert len(dropped) == 18
    assert sum(stored_markers(server).values()) == 2


class _MangledAnswers(http.server.BaseHTTPRequestHandler):
    """Answers every POST 202 with a body that says gzip and is not (as a broken proxy
    might): the client cannot read the answer."""

    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts += 1
        self.send_response(202)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"this is plain")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def mangling_server() -> Iterator[str]:
    _MangledAnswers.posts = 0
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MangledAnswers)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.server_address[1]}"
    listener.shutdown()
    listener.server_close()


def test_an_unreadable_answer_is_retried_then_reported_and_the_sender_goes_on(
    mangling_server: str,
) -> None:
    failures: list[tuple[int, Exception]] = []
    retry = RetryPolicy(max_retries=2, base_seconds=0.01, cap_seconds=0.02)
    with Client(
        mangling_server,
        "efsk_any",
        retry=retry,
        on_error=lambda events, error: failures.append((len(events), error)),
    ) as client:
        client.track("view", email="a@b.co")
        assert client.flush(timeout=10)
        client.track("view", email="c@d.co")  # the sender's thread is still there
        assert client.flush(timeout=10)
    assert [count for count, _ in failures] == [1, 1]
    assert all(isinstance(error, httpx2.DecodingError) for _, error in failures)
    assert _MangledAnswers.posts == 6  # each batch: the first try and two retries


def test_the_async_client_reports_an_unreadable_answer_and_goes_on(mangling_server: str) -> None:
    failures: list[Exception] = []

    async def send_two() -> None:
        async with AsyncClient(
            mangling_server,
            "efsk_any",
            retry=RetryPolicy(max_retries=1, base_seconds=0.01, cap_seconds=0.02),
            on_error=lambda events, error: failures.append(error),
        ) as client:
            await client.track("view", email="a@b.co")
            await asyncio.wait_for(client.flush(), 10)
            await client.track("view", email="c@d.co")
            await asyncio.wait_for(client.flush(), 10)

    asyncio.run(send_two())
    assert len(failures) == 2
    assert all(isinstance(error, httpx2.DecodingError) for error in failures)


def test_an_error_no_retry_can_mend_is_reported_at_once_and_the_sender_goes_on() -> None:
    """A key that cannot go into a header (an "é" pasted into it): no retry can send
    the batch, so it reaches ``on_error`` without the retries' waits."""
    failures: list[Exception] = []
    retry = RetryPolicy(max_retries=5, base_seconds=2.0, cap_seconds=2.0)
    started = time.monotonic()
    with Client(
        "http://127.0.0.1:9",
        "efsk_caf\u00e9",
        retry=retry,
        on_error=lambda events, error: failures.append(error),
    ) as client:
        client.track("view", email="a@b.co")
        assert client.flush(timeout=10)
        client.track("view", email="c@d.co")  # the sender's thread is still there
        assert client.flush(timeout=10)
    assert len(failures) == 2
    assert all(isinstance(error, UnicodeEncodeError) for error in failures)
    assert time.monotonic() - started < 2.0  # not one retry's wait


def test_the_async_client_reports_an_error_no_retry_can_mend_at_once() -> None:
    failures: list[Exception] = []

    async def send_one() -> None:
        async with AsyncClient(
            "http://127.0.0.1:9",
            "efsk_caf\u00e9",
            retry=RetryPolicy(max_retries=5, base_seconds=2.0, cap_seconds=2.0),
            on_error=lambda events, error: failures.append(error),
        ) as client:
            await client.track("view", email="a@b.co")
            await asyncio.wait_for(client.flush(), 1.5)  # one retry's wait would time out

    asyncio.run(send_one())
    assert len(failures) == 1
    assert isinstance(failures[0], UnicodeEncodeError)
