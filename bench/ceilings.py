"""The ceilings eventfold's throughput is compared with, and the cost of validation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bench import minimal_server
from bench.load import run_wrk
from bench.processes import (
    PostgresUnreachable,
    free_port,
    fresh_postgres_database,
    wait_until_listening,
)
from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
from eventfold.storage.postgres import PostgresStorage
from eventfold.storage.sql_store import SqlStorage
from eventfold.storage.sqlite import SqliteStorage


def http_ceiling(body_file: Path, connections: int, seconds: float) -> float:
    """(a) Requests/s of the same HTTP stack answering 202 without any work."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.null_app", str(port)])
    try:
        wait_until_listening(port)
        result = run_wrk(
            f"http://127.0.0.1:{port}/api/v0/events", body_file, "unused", connections, seconds
        )
    finally:
        server.terminate()
        server.wait()
    return result.accepted_per_second


def minimal_server_ceiling(body_file: Path, connections: int, seconds: float) -> float:
    """(c) Events/s accepted by the least server that honours the contract
    (bench/minimal_server.py): HTTP, typed validation and a durable append, nothing else."""
    events = len(msgspec.json.decode(body_file.read_bytes())["events"])
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        # It must reject what the contract rejects, or its rate means nothing.
        answers = minimal_server.self_check(Path(folder) / "self-check.db")
        statuses = {name: status for name, (status, _, _) in answers.items()}
        if statuses.pop("valid") != 202 or set(statuses.values()) != {400}:
            raise RuntimeError(f"the minimal server fails its self-check: {answers}")
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.minimal_server", str(port), f"{folder}/ceiling.db"]
        )
        try:
            wait_until_listening(port)
            result = run_wrk(
                f"http://127.0.0.1:{port}/api/v0/events", body_file, "unused", connections, seconds
            )
        finally:
            server.terminate()
            server.wait()
    return result.accepted_per_second * events


def validation_cost(body: bytes, repeats: int = 7, seconds: float = 0.2) -> dict[str, float]:
    """µs an event, best of ``repeats``, to check ``body``: with only the typed contract
    (a msgspec decode into the minimal server's Structs), and with eventfold's whole
    validation and normalisation (``BatchValidator.validate``)."""
    validator = BatchValidator(Limits())
    received_at = now_ms()
    events = len(validator.validate(body, received_at))
    return {
        "msgspec_typed_contract_us_per_event": _best_us(
            lambda: minimal_server.DECODER.decode(body), events, repeats, seconds
        ),
        "eventfold_validate_us_per_event": _best_us(
            lambda: validator.validate(body, received_at), events, repeats, seconds
        ),
    }


def _best_us(work: Callable[[], object], events: int, repeats: int, seconds: float) -> float:
    started = time.perf_counter()
    work()
    calls = max(1, int(seconds / max(time.perf_counter() - started, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        best = min(best, time.perf_counter() - started)
    return round(best / calls / events * 1e6, 2)


def storage_ceiling(
    body: bytes, seconds: float, storage: SqlStorage, concurrency: int = 32
) -> float:
    """(b) Events/s decoded, validated and durably stored in-process, with no HTTP and
    no fold, into ``storage`` (a fresh database)."""
    validator = BatchValidator(Limits())
    storage.create_key("bench", now_ms())
    stored = 0

    async def client(deadline: float) -> None:
        nonlocal stored
        while time.monotonic() < deadline:
            events = validator.validate(body, now_ms())
            await storage.append(1, now_ms(), events)
            stored += len(events)

    async def drive() -> float:
        started = time.monotonic()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        return time.monotonic() - started

    elapsed = asyncio.run(drive())
    return stored / elapsed


def sqlite_storage_ceiling(body: bytes, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        storage = SqliteStorage(Path(folder) / "ceiling.db")
        try:
            return storage_ceiling(body, seconds, storage)
        finally:
            storage.close()


def postgres_storage_ceiling(body: bytes, seconds: float, server: str) -> dict[str, Any]:
    """Ceiling (b) on a new PostgreSQL database, with the CPU time PostgreSQL's own
    processes spent per event meanwhile (when they run on this machine)."""
    try:
        with fresh_postgres_database(server) as url:
            storage = PostgresStorage(url)
            try:
                cpu_before = cpu_seconds_of("postgres")
                rate = storage_ceiling(body, seconds, storage)
                postgres_cpu = cpu_seconds_of("postgres") - cpu_before
            finally:
                storage.close()
    except PostgresUnreachable as error:
        return {"skipped": str(error)}
    return {
        "events_per_second": round(rate),
        "postgres_cpu_us_per_event": round(postgres_cpu / (rate * seconds) * 1e6, 1)
        if postgres_cpu
        else None,
    }


def cpu_seconds_of(program: str) -> float:
    """User + system CPU seconds so far of this machine's processes named ``program``,
    with their reaped children's (a PostgreSQL backend that exits hands its time to the
    postmaster's; without it the figure fell when one exited, to -0.8 µs an event)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, _, rest = stat.read_text().partition(") ")
        except OSError:
            continue  # gone meanwhile
        if name.endswith(f"({program}"):
            fields = rest.split()
            total += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")
