"""Starting and watching the server processes a benchmark drives."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def create_key(database_url: str, account: str = "bench", rate_limit: float | None = None) -> str:
    """A new secret key, made with the command line as an operator would."""
    limit = ["--rate-limit", str(rate_limit)] if rate_limit is not None else []
    command = [
        sys.executable,
        "-m",
        "eventfold",
        "keys",
        "create",
        "--account",
        account,
        *limit,
        "--database",
        database_url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


def start_server(
    database_url: str, port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "eventfold", "serve", "--port", str(port)],
        env={**os.environ, "EVENTFOLD_DATABASE_URL": database_url, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_listening(port)
    return server


def wait_for_fold(url: str, timeout: float = 120) -> float:
    """Waits until the fold has caught up; returns how long that took."""
    started = time.monotonic()
    while (httpx2.get(f"{url}/healthz").json()["lag"] or {"events": 1})["events"] > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError("the fold did not catch up")
        time.sleep(0.05)
    return time.monotonic() - started


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat)."""
    # The command name, in parentheses, may hold spaces: the fields follow its ")".
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> set[int]:
    """The processes ``pid`` started that still run."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def server_and_fold_cpu_seconds(server_pid: int) -> tuple[float, dict[int, float]]:
    """CPU seconds used so far by the server process, and by each process it started
    that still runs (the fold's child process, by default), by pid."""
    folds: dict[int, float] = {}
    for child in children(server_pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            folds[child] = process_cpu_seconds(child)
    return process_cpu_seconds(server_pid), folds


def fold_cpu_between(before: dict[int, float], after: dict[int, float]) -> float | None:
    """CPU seconds the server's children used between two readings; None when one that
    ran at the first had exited by the second (a restarted fold: its CPU is lost)."""
    if before.keys() - after.keys():
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def wait_until_started(server_pid: int, timeout: float = 30) -> None:
    """Waits until the server and the processes it started (its fold's, started before
    the server listens) have settled, under a tenth of a core over half a second, so
    that their start-up is not counted as work."""
    deadline = time.monotonic() + timeout
    before = _total_cpu(server_pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _total_cpu(server_pid)
        if now - before < 0.05:
            return
        before = now
    raise RuntimeError(f"the server (pid {server_pid}) and its fold did not settle")


def _total_cpu(server_pid: int) -> float:
    server, folds = server_and_fold_cpu_seconds(server_pid)
    return server + sum(folds.values())


def read_all_events(url: str, secret: str) -> list[dict[str, Any]]:
    """Every event of the key's account, read back through the paged API."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with httpx2.Client(
        base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as http:
        while True:
            page = _read_page(http, params)
            events += page["events"]
            if page["nextCursor"] is None:
                return events
            params["cursor"] = page["nextCursor"]


_READ_TRIES = 10


def _read_page(http: httpx2.Client, params: dict[str, Any]) -> dict[str, Any]:
    """One page of ``GET /api/v0/events``, read again after a 503 as its ``Retry-After``
    asks (the server answers so for a moment after the database dropped its connections),
    up to ``_READ_TRIES`` times; any other answer but 200 is an error that says itself."""
    for attempt in range(1, _READ_TRIES + 1):
        answer = http.get("/api/v0/events", params=params)
        if answer.status_code != 503 or attempt == _READ_TRIES:
            break
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    if answer.status_code != 200:
        raise RuntimeError(f"GET /api/v0/events answered {answer.status_code}: {answer.text}")
    page: dict[str, Any] = answer.json()
    return page


class PostgresUnreachable(Exception):
    pass


@contextmanager
def fresh_postgres_database(server: str, prefix: str = "eventfold_bench") -> Iterator[str]:
    """The URL of a new database on the PostgreSQL server at ``server``, dropped after."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        raise PostgresUnreachable(
            f"PostgreSQL at {server} is not reachable: {str(error).strip()}"
        ) from None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server}/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
