"""SIGKILL of the process delivering webhooks, mid-flight, loses no message: a server is
killed while a receiver holds one of its requests, and ``eventfold worker`` delivers
every message afterwards (the held one again, with the same id), on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.processes import create_key, free_port, wait_until_listening

from tests.receivers import Answer, Received, Receiver, receiving

EVENTS = 20


def start(command: str, database_url: str, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EVENTFOLD_DATABASE_URL": database_url,
        "EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE": "true",
        "EVENTFOLD_WEBHOOK_RETRY_SECONDS": "0,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2",
        "EVENTFOLD_WEBHOOK_TIMEOUT_SECONDS": "2",
        "EVENTFOLD_WEBHOOK_LEASE_SECONDS": "3",
    }
    with (folder / f"{command}.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "eventfold", command, *args],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_for_everything(receiver: Receiver, timeout: float = 60) -> list[Received]:
    """The requests once every message arrived and the one held at the kill came again
    (other messages the kill caught may come twice too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        requests = list(receiver.requests)
        ids = [request.headers["webhook-id"] for request in requests]
        if len(set(ids)) >= EVENTS and ids.count(ids[0]) >= 2:
            return requests
        time.sleep(0.05)
    return list(receiver.requests)


@pytest.mark.slow
def test_sigkill_mid_delivery_loses_no_message(database_url: str, tmp_path: Path) -> None:
    secret = create_key(database_url, "acme")
    headers = {"Authorization": f"Bearer {secret}"}
    held = threading.Event()

    def policy(index: int, request: Received) -> Answer:
        if index == 0:
            held.set()
            return Answer(200, delay_seconds=6)  # mid-flight when the server dies
        return Answer(200)

    with receiving(policy) as receiver:
        port = free_port()
        server = start("serve", database_url, tmp_path, "--port", str(port))
        worker: subprocess.Popen[bytes] | None = None
        try:
            wait_until_listening(port)
            url = f"http://127.0.0.1:{port}"
            with httpx2.Client(base_url=url, headers=headers, timeout=10) as client:
                created = client.post(
                    "/api/v0/webhooks", json={"url": receiver.url, "types": ["event.matched"]}
                )
                assert created.status_code == 201, created.text
                events: list[dict[str, Any]] = [
                    {"action": "login", "email": f"p{n}@example.com"} for n in range(EVENTS)
                ]
                for start_at in range(0, EVENTS, 5):
                    answer = client.post(
                        "/api/v0/events", json={"events": events[start_at : start_at + 5]}
                    )
                    assert answer.status_code == 202, answer.text
            assert held.wait(15), "the server never delivered"
            server.send_signal(signal.SIGKILL)
            server.wait()
            worker = start("worker", database_url, tmp_path)
            requests = wait_for_everything(receiver)
        finally:
            for process in (server, worker):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGINT)
                    process.wait(timeout=20)
        assert worker is not None
        assert worker.returncode == 0  # the worker stopped cleanly
    ids = [request.headers["webhook-id"] for request in requests]
    assert len(set(ids)) == EVENTS, "a message was lost"
    assert ids.count(ids[0]) >= 2, "the message in flight at the kill was not sent again"
    redelivered = [r for r in requests[1:] if r.headers["webhook-id"] == ids[0]]
    assert redelivered[0].body == requests[0].body
