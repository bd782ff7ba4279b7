"""python -m bench.export: GET /api/v0/profiles/export of many profiles from a server
process, and that server's memory: the export must stream, not hold the account.

    python -m bench.export                         # 100,000 profiles on SQLite
    python -m bench.export --profiles 20000 --postgres postgresql://postgres@127.0.0.1:5432

The profiles are made by one event each (realistic fields, a distinct email) through
POST /api/v0/events and folded; the server is then restarted, so that its peak RSS
(VmHWM) covers the export alone, and the export is read to the end.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx2

from bench.batches import realistic_event
from bench.processes import (
    create_key,
    free_port,
    fresh_postgres_database,
    start_server,
    wait_for_fold,
)

BATCH = 5_000


@dataclass
class ExportRun:
    profiles: int
    exported: int = 0
    export_mb: float = 0.0
    export_seconds: float = 0.0
    idle_rss_mb: float = 0.0  # the restarted server before the export
    peak_rss_mb: float = 0.0  # VmHWM of that server after the export
    seed_seconds: float = 0.0


def run_export(profiles: int, database_url: str) -> ExportRun:
    run = ExportRun(profiles)
    secret = create_key(database_url)
    headers = {"Authorization": f"Bearer {secret}"}
    started = time.monotonic()
    with _server(database_url) as (url, _):
        rng = random.Random(1)
        for first in range(0, profiles, BATCH):
            events = []
            for number in range(first, min(first + BATCH, profiles)):
                event = realistic_event(rng)
                event.pop("phoneNumber", None)
                event["email"] = f"customer{number}@shop.example"
                events.append(event)
            while True:  # a 503 says the fold is behind: wait as Retry-After says
                answer = httpx2.post(
                    f"{url}/api/v0/events", json={"events": events}, headers=headers, timeout=120
                )
                if answer.status_code != 503:
                    answer.raise_for_status()
                    break
                time.sleep(float(answer.headers.get("retry-after", "1")))
        wait_for_fold(url, timeout=1800)
    run.seed_seconds = time.monotonic() - started
    with _server(database_url) as (url, pid):
        run.idle_rss_mb = _memory_mb(pid, "VmRSS")
        started = time.monotonic()
        size = 0
        with httpx2.stream(
            "GET", f"{url}/api/v0/profiles/export", headers=headers, timeout=600
        ) as answer:
            answer.raise_for_status()
            for line in answer.iter_lines():
                if line:
                    json.loads(line)
                    run.exported += 1
                    size += len(line) + 1
        run.export_seconds = time.monotonic() - started
        run.export_mb = size / 1024 / 1024
        run.peak_rss_mb = _memory_mb(pid, "VmHWM")
    return run


@contextmanager
def _server(database_url: str) -> Iterator[tuple[str, int]]:
    """A server process on ``database_url`` for the ``with`` block: its URL and pid."""
    port = free_port()
    server = start_server(database_url, port)
    try:
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _memory_mb(pid: int, line: str) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith(line + ":"):
            return int(row.split()[1]) / 1024
    raise RuntimeError(f"no {line} for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--postgres", help="a PostgreSQL server (a database is made)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eventfold-export-") as folder:
        if args.postgres:
            with fresh_postgres_database(args.postgres) as database_url:
                run = run_export(args.profiles, database_url)
        else:
            run = run_export(args.profiles, f"sqlite:///{Path(folder) / 'export.db'}")
    print(json.dumps(asdict(run)))
    print(
        f"exported {run.exported:,} of {run.profiles:,} profiles ({run.export_mb:.0f} MB of "
        f"NDJSON) in {run.export_seconds:.1f} s; server RSS {run.idle_rss_mb:.0f} MB idle, "
        f"peak (VmHWM) {run.peak_rss_mb:.0f} MB (seeding took {run.seed_seconds:.0f} s)"
    )
    if run.exported != run.profiles:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
