"""Every client reads its answer, never a reset: an error answered before the body was
read is followed by a lingering close (bounded in bytes and time), and a request over
the cap on requests in flight gets a JSON 503 with Retry-After."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.uploads import run_uploads

from eventfold.http.protocol import LINGER_MAX_BYTES
from tests.servers import Served, served

LARGE_BODY = b'{"events": []}' + b" " * 12_000_000  # over the 10 MiB limit
MIB = 1024 * 1024


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path, env={"EVENTFOLD_DATABASE_URL": database_url}) as running:
        yield running


def post_all_then_read(
    port: int, body: bytes, headers: dict[str, str], path: str = "/api/v0/events"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """As Python's http.client (and urllib, requests) do: the whole body is sent, with
    no ``Expect: 100-continue``, before the answer is read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
    finally:
        connection.close()


def connect(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port))
    connection.settimeout(10)
    return connection


def send_head_and_read_answer(connection: socket.socket, head: bytes) -> bytes:
    """Sends a request's head (its body to follow), then reads the answer the server
    sends before the body, up to the end of what the server sends."""
    connection.sendall(head)
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def send_until_cut_off(connection: socket.socket, chunk: bytes, pause: float) -> int:
    """Sends until the server has closed the connection (a reset or a broken pipe);
    returns how many bytes were sent."""
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < 20:
        try:
            connection.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return sent
        sent += len(chunk)
        time.sleep(pause)
    raise AssertionError(f"the server was still reading after 20 s and {sent} bytes")


def head(content_length: int, *headers: str) -> bytes:
    lines = ["POST /api/v0/events HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [*headers, f"Content-Length: {content_length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.slow
def test_a_12_mb_body_sent_without_expect_continue_gets_its_413(server: Served) -> None:
    headers = {"Authorization": f"Bearer {server.secret}", "Content-Type": "application/json"}
    status, answer_headers, answer = post_all_then_read(server.port, LARGE_BODY, headers)
    assert status == 413, answer
    assert "larger than 10485760 bytes" in answer["message"]
    assert answer_headers["connection"] == "close"


@pytest.mark.slow
def test_every_early_answer_to_a_large_body_is_read_by_a_client_that_sends_it_all(
    server: Served,
) -> None:
    key = f"Bearer {server.secret}"
    cases = [
        ({"Content-Type": "application/json"}, "/api/v0/events", 401, "no secret key"),
        (
            {"Content-Type": "application/json", "Authorization": "Bearer efsk_unknown"},
            "/api/v0/events",
            401,
            "key",
        ),
        ({"Content-Type": "text/plain", "Authorization": key}, "/api/v0/events", 415, "JSON"),
        ({"Content-Type": "application/json", "Authorization": key}, "/api/v0/nowhere", 404, ""),
    ]
    body = b'{"events": []}' + b" " * (9 * MIB)  # under the limit: the 413 is not first
    for headers, path, expected, words in cases:
        status, _, answer = post_all_then_read(server.port, body, headers, path)
        assert status == expected, (headers, path, answer)
        assert words in answer["message"]


@pytest.mark.slow
def test_a_client_that_never_stops_sending_is_cut_off_after_the_linger_time(
    tmp_path: Path,
) -> None:
    with (
        served(tmp_path, env={"EVENTFOLD_LINGER_SECONDS": "1"}) as server,
        connect(server.port) as connection,
    ):
        answer = send_head_and_read_answer(connection, head(10**9))
        assert answer.startswith(b"HTTP/1.1 401"), answer  # read while still sending
        answered = time.monotonic()
        # Slowly: the time runs out, not the bytes.
        send_until_cut_off(connection, b" " * 1024, pause=0.02)
        assert 0.8 < time.monotonic() - answered < 4


@pytest.mark.slow
def test_a_client_that_sends_fast_is_cut_off_after_64_mib(tmp_path: Path) -> None:
    with served(tmp_path) as server, connect(server.port) as connection:
        answer = send_head_and_read_answer(connection, head(10**10))
        assert answer.startswith(b"HTTP/1.1 401"), answer
        answered = time.monotonic()
        sent = send_until_cut_off(connection, b" " * MIB, pause=0)
        # Cut off by the bytes, well before the 10 s; what the kernels buffered counts too.
        assert LINGER_MAX_BYTES <= sent < LINGER_MAX_BYTES + 32 * MIB
        assert time.monotonic() - answered < 8


@pytest.mark.slow
def test_a_request_over_the_cap_gets_a_json_503_with_retry_after_even_with_a_large_body(
    tmp_path: Path,
) -> None:
    batch = json.dumps({"events": [{"action": "view", "email": "a@b.co"}]}).encode()
    with (
        served(tmp_path, env={"EVENTFOLD_MAX_CONCURRENT_REQUESTS": "1"}) as server,
        connect(server.port) as holder,
    ):
        # The one request allowed: its body arrives only later.
        holder.sendall(head(len(batch), f"Authorization: Bearer {server.secret}") + batch[:1])
        deadline = time.monotonic() + 10
        while httpx2.get(f"{server.url}/healthz").status_code != 503:
            assert time.monotonic() < deadline, "the first request was never admitted"
            time.sleep(0.05)

        headers = {"Authorization": f"Bearer {server.secret}", "Content-Type": "application/json"}
        body = b'{"events": []}' + b" " * (9 * MIB)
        status, answer_headers, answer = post_all_then_read(server.port, body, headers)
        assert status == 503, answer
        assert answer_headers["retry-after"] == "1"
        assert "already handling 1 requests" in answer["message"]

        holder.sendall(batch[1:])
        assert holder.recv(65536).startswith(b"HTTP/1.1 202")
        assert post_all_then_read(server.port, batch, headers)[0] == 202  # the slot is free


@pytest.mark.slow
def test_many_large_uploads_at_once_all_get_answers_in_bounded_memory() -> None:
    run = run_uploads(40, max_concurrent_requests=4)
    assert run.errors == []  # no resets, every answer JSON, every 503 with Retry-After
    assert sum(run.statuses.values()) == 40
    assert set(run.statuses) <= {202, 413, 503}
    assert run.statuses[202] >= 1
    # 4 batches of 9 MiB in flight hold ~25 MB each, over ~40 MB idle (measured: ~165 MB
    # peak); all 40 at once would hold about 1 GB.
    assert run.peak_rss_mb < 300
