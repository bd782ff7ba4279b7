"""Slow clients cannot hold up others, and are cut off by deadlines."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx2
import pytest

from eventfold.http.protocol import HEAD_TIMEOUT_SECONDS
from tests.conftest import auth
from tests.servers import served


def read_answer(connection: socket.socket) -> bytes:
    received = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return received
        received += chunk


@pytest.mark.slow
def test_slow_clients_are_cut_off_and_do_not_hold_up_others(tmp_path: Path) -> None:
    with served(tmp_path, env={"EVENTFOLD_BODY_TIMEOUT_SECONDS": "1"}) as server:
        slow_heads, slow_bodies = [], []
        started = time.monotonic()
        for _ in range(20):
            head = socket.create_connection(("127.0.0.1", server.port))
            head.sendall(b"POST /api/v0/events HTTP/1.1\r\nHost: x\r\n")
            slow_heads.append(head)
            body = socket.create_connection(("127.0.0.1", server.port))
            body.sendall(
                b"POST /api/v0/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + server.secret.encode() + b"\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            slow_bodies.append(body)

        # Meanwhile good requests are served promptly.
        good = json.dumps({"events": [{"action": "a", "email": "a@b.co"}]})
        for _ in range(20):
            before = time.monotonic()
            response = httpx2.post(
                f"{server.url}/api/v0/events", content=good, headers=auth(server.secret)
            )
            assert response.status_code == 202
            assert time.monotonic() - before < 1

        for connection in slow_bodies:
            connection.settimeout(5)
            answer = read_answer(connection)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"did not arrive within 1 seconds" in answer
        assert time.monotonic() - started < 5

        for connection in slow_heads:
            connection.sendall(b"X-Trickle: 1\r\n")  # still sending, just slowly
        for connection in slow_heads:
            connection.settimeout(HEAD_TIMEOUT_SECONDS + 5)
            answer = read_answer(connection)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        elapsed = time.monotonic() - started
        assert HEAD_TIMEOUT_SECONDS - 1 < elapsed < HEAD_TIMEOUT_SECONDS + 5
        for connection in slow_heads + slow_bodies:
            connection.close()
