"""Crash safety: SIGKILL `eventfold serve` and `eventfold worker` at random moments under
concurrent load, restart them, and check through the read API that every event that got
a 202 is stored and folded exactly once, and that no batch is half-stored.

    python -m bench.crash --kills 20          # the full run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx2

from bench.processes import (
    create_key,
    free_port,
    read_all_events,
    wait_for_fold,
    wait_until_listening,
)

PEOPLE = 40


@dataclass
class CrashReport:
    kills: int = 0
    server_kills: int = 0
    worker_kills: int = 0
    requests_202: int = 0
    requests_failed: int = 0
    events_202: int = 0
    stored: int = 0
    folded: int = 0
    profile_event_count: int = 0
    lost: int = 0
    duplicated: int = 0
    half_stored_batches: int = 0
    unanswered_batches_stored: int = 0
    unanswered_events_stored: int = 0


@dataclass
class _Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: list[list[str]] = field(default_factory=list)
    unknown: list[list[str]] = field(default_factory=list)


class _Processes:
    """The server and the worker, each restartable."""

    def __init__(self, database_url: str, port: int) -> None:
        self.port = port
        self.env = {
            **os.environ,
            "EVENTFOLD_DATABASE_URL": database_url,
            "EVENTFOLD_FOLD_IN_SERVER": "false",
        }
        self.server = self._start_server()
        self.worker = self._start_worker()

    def _start_server(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventfold", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_listening(self.port)
        return process

    def _start_worker(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "eventfold", "worker"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill_and_restart(self, which: str) -> None:
        process = self.server if which == "server" else self.worker
        process.send_signal(signal.SIGKILL)
        process.wait()
        if which == "server":
            self.server = self._start_server()
        else:
            self.worker = self._start_worker()

    def stop(self) -> None:
        for process in (self.server, self.worker):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)


def run(
    kills: int, clients: int = 4, seed: int = 1, database_url: str | None = None
) -> CrashReport:
    """One crash run (on a fresh SQLite file unless given an empty database); returns
    the counts."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder_name:
        database_url = database_url or f"sqlite:///{Path(folder_name) / 'crash.db'}"
        port = free_port()
        secret = create_key(database_url)
        processes = _Processes(database_url, port)
        url = f"http://127.0.0.1:{port}"
        ledger, stop = _Ledger(), threading.Event()
        threads = [
            threading.Thread(target=_client, args=(url, secret, n, ledger, stop))
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        report = CrashReport()
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 0.8))
                which = rng.choice(["server", "worker"])
                processes.kill_and_restart(which)
                report.kills += 1
                setattr(report, f"{which}_kills", getattr(report, f"{which}_kills") + 1)
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        try:
            _check(url, secret, ledger, report)
        finally:
            processes.stop()
        return report


def _client(url: str, secret: str, number: int, ledger: _Ledger, stop: threading.Event) -> None:
    rng = random.Random(number)
    headers = {"Authorization": f"Bearer {secret}"}
    sent = 0
    with httpx2.Client(base_url=url, headers=headers, timeout=10) as client:
        while not stop.is_set():
            ids = [f"{number}-{sent}-{i}" for i in range(rng.randint(1, 50))]
            sent += 1
            events = [
                {
                    "action": "crash",
                    "email": f"p{rng.randrange(PEOPLE)}@crash.example",
                    "n": event_id,
                }
                for event_id in ids
            ]
            try:
                response = client.post("/api/v0/events", json={"events": events})
                status = response.status_code
            except httpx2.HTTPError:
                status = 0
            with ledger.lock:
                (ledger.accepted if status == 202 else ledger.unknown).append(ids)
            if status != 202:
                time.sleep(0.05)


def _check(url: str, secret: str, ledger: _Ledger, report: CrashReport) -> None:
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx2.Client(base_url=url, headers=headers, timeout=30) as client:
        wait_for_fold(url)
        events = read_all_events(url, secret)
        stored = Counter(event["n"] for event in events)
        folded = sum(event["foldedIntoProfile"] is not None for event in events)
        for person in range(PEOPLE):
            answer = client.get("/api/v0/profiles", params={"email": f"p{person}@crash.example"})
            if answer.status_code == 200:
                report.profile_event_count += answer.json()["eventCount"]
    accepted_ids = [i for batch in ledger.accepted for i in batch]
    report.requests_202 = len(ledger.accepted)
    report.requests_failed = len(ledger.unknown)
    report.events_202 = len(accepted_ids)
    report.stored = sum(stored.values())
    report.folded = folded
    report.lost = sum(1 for i in accepted_ids if stored[i] == 0)
    report.duplicated = sum(count - 1 for count in stored.values() if count > 1)
    for batch in ledger.unknown:
        present = sum(1 for i in batch if stored[i])
        if 0 < present < len(batch):
            report.half_stored_batches += 1
        elif present:  # committed, but the 202 was lost in a kill
            report.unanswered_batches_stored += 1
            report.unanswered_events_stored += present


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--database", metavar="URL", help="an empty database to use (default: a new SQLite file)"
    )
    args = parser.parse_args()
    report = run(args.kills, args.clients, args.seed, args.database)
    print(json.dumps(asdict(report), indent=2))
    sys.exit(0 if report.lost == report.duplicated == report.half_stored_batches == 0 else 1)


if __name__ == "__main__":
    main()
