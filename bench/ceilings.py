"""The two ceilings eventfold's throughput is compared with."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import run_wrk
from bench.processes import free_port, wait_until_listening
from eventfold.clock import now_ms
from eventfold.domain.limits import Limits
from eventfold.domain.validation import BatchValidator
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


def storage_ceiling(body: bytes, seconds: float, concurrency: int = 32) -> float:
    """(b) Events/s decoded, validated and durably stored in-process, with no HTTP."""
    validator = BatchValidator(Limits())
    with tempfile.TemporaryDirectory() as folder:
        storage = SqliteStorage(Path(folder) / "ceiling.db")
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
        storage.close()
    return stored / elapsed
