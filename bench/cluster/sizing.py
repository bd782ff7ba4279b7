"""Sizing figures for docs/deploy.md, measured on the cluster the harness builds
(``python -m bench.cluster --sizing``):

- events/s one API node accepts, and two together: wrk posting 100-event batches over
  16 connections each for a few seconds, the workers stopped meanwhile (on real hosts
  they run elsewhere; here they would take the API nodes' cores) -- the batches wait in
  the stream, and the API nodes run with the fold's backpressure lifted
  (``EVENTFOLD_MAX_FOLD_LAG_SECONDS``, see SETTINGS) so that they take them;
- events/s one worker applies and folds, then two: the time they take to empty that
  backlog, counted in the database;
- what the JetStream cluster adds to a request: one connection posting one batch at a
  time to an API node with ``--log`` (R3, ``sync_interval: always``), and to an API
  node on the same host without it (the database is the log: PostgreSQL commits).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import httpx2
import psycopg

from bench.batches import batch_body
from bench.cluster.deployment import Deployment
from bench.cluster.services import Service, wait_until_listening
from bench.cluster.topology import API, API_PORT, api_url
from bench.load import LoadResult, run_wrk

CONNECTIONS = 16
# For the API nodes and workers of a sizing run: a fold stopped on purpose must not
# make the API nodes refuse what they are measured taking.
SETTINGS = {"MAX_FOLD_LAG_SECONDS": "1000000000"}
DIRECT_PORT = 8001


def measure(cluster: Deployment, folder: Path, seconds: int) -> list[tuple[str, str]]:
    """Rows of (what, figure)."""
    secret = cluster.create_keys(["sizing"])["sizing"]
    body = folder / "batch-100.json"
    body.write_bytes(batch_body(100))
    rows: list[tuple[str, str]] = []
    for worker in cluster.workers:
        worker.stop(signal.SIGTERM)
    one = _load([API[0].address], body, secret, seconds)
    rows.append(("events/s accepted by one API node", _accepted(one)))
    rows.append(("events/s applied and folded by one worker", _drain(cluster, [0])))
    both = _load([host.address for host in API], body, secret, seconds)
    rows.append(("events/s accepted by two API nodes together", _accepted(both)))
    rows.append(("events/s applied and folded by two workers", _drain(cluster, [0, 1])))
    for worker in cluster.workers:
        worker.start()
    through_log = run_wrk(f"{api_url(API[0])}/api/v0/events", body, secret, 1, seconds)
    direct = _direct_latency(cluster, folder, body, seconds)
    rows.append(("request p50 / p99, one connection, --log (JetStream R3)", _latency(through_log)))
    rows.append(("request p50 / p99, one connection, no --log (PostgreSQL)", _latency(direct)))
    added = (through_log.p50_ms - direct.p50_ms, through_log.p99_ms - direct.p99_ms)
    rows.append(("added by JetStream, p50 / p99", f"{added[0]:+.1f} / {added[1]:+.1f} ms"))
    return rows


def _load(
    addresses: list[str], body: Path, secret: str, seconds: int
) -> tuple[list[LoadResult], set[str]]:
    """wrk against each address at once; and what refusals said meanwhile (a request
    of its own every half second: wrk does not read bodies)."""
    results: list[LoadResult] = []
    said: set[str] = set()
    done = threading.Event()

    def one(address: str) -> None:
        url = f"http://{address}:{API_PORT}/api/v0/events"
        results.append(run_wrk(url, body, secret, CONNECTIONS, seconds))

    def sample() -> None:
        url = f"http://{addresses[0]}:{API_PORT}/api/v0/events"
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        with httpx2.Client(timeout=30) as http:
            while not done.wait(0.5):
                answer = http.post(url, content=body.read_bytes(), headers=headers)
                if answer.status_code != 202:
                    said.add(f"{answer.status_code} {answer.json().get('message', '')[:100]}")

    threads = [threading.Thread(target=one, args=(address,)) for address in addresses]
    sampler = threading.Thread(target=sample)
    for thread in [*threads, sampler]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    return results, said


def _accepted(load: tuple[list[LoadResult], set[str]]) -> str:
    results, said = load
    rate = sum(result.accepted_per_second for result in results) * 100
    failed = sum(result.failed for result in results)
    p99 = max(result.p99_ms for result in results)
    requests = sum(result.requests for result in results)
    refusals = f": {'; '.join(sorted(said))}" if said else ""
    return f"{rate:,.0f} (p99 {p99:.0f} ms; {failed} of {requests:,} requests not 202{refusals})"


def _drain(cluster: Deployment, workers: list[int]) -> str:
    """Starts the workers on the backlog in the stream; its size over the time they took
    from their first applied batch to the last (start-up left out), then stops them."""
    before = _stored(cluster.database_url)
    for index in workers:
        cluster.workers[index].start()
    deadline = time.monotonic() + 300
    first: tuple[float, int] | None = None
    last = (time.monotonic(), before)
    while time.monotonic() < deadline:
        count, now = _stored(cluster.database_url), time.monotonic()
        if count > last[1]:
            first = first or last
            last = (now, count)
        elif first is not None and now - last[0] > 3:  # nothing more for 3 s: drained
            break
        time.sleep(0.2)
    for index in workers:
        cluster.workers[index].stop(signal.SIGTERM)
    if first is None:
        return "nothing was applied"
    rate = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
    return f"{rate:,.0f} ({last[1] - first[1]:,} events in {last[0] - first[0]:.1f} s)"


def _stored(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def _direct_latency(cluster: Deployment, folder: Path, body: Path, seconds: int) -> LoadResult:
    """The same host's API node without ``--log``, on a database of its own."""
    database = cluster.database_url.rpartition("/")[0] + "/eventfold_direct"
    with psycopg.connect(cluster.database_url, autocommit=True) as admin:
        admin.execute("CREATE DATABASE eventfold_direct")
    secret = cluster.eventfold(
        API[0], "keys", "create", "--account", "sizing", "--database", database
    ).splitlines()[-1]
    command = [sys.executable, "-m", "eventfold", "serve", "--host", API[0].address]
    command += ["--port", str(DIRECT_PORT), "--database", database]
    # Nothing folds here, as nothing folds on the API nodes with --log.
    env = {**cluster.eventfold_env(), "EVENTFOLD_FOLD_IN_SERVER": "false"}
    node = Service("api-1-direct", API[0], command, folder / "api-1-direct.log", env)
    node.start()
    try:
        wait_until_listening(API[0].address, DIRECT_PORT, 60, node)
        url = f"http://{API[0].address}:{DIRECT_PORT}/api/v0/events"
        return run_wrk(url, body, secret, 1, seconds)
    finally:
        node.stop(signal.SIGINT)


def _latency(result: LoadResult) -> str:
    failed = f"; {result.failed} of {result.requests:,} not 202" if result.failed else ""
    return f"{result.p50_ms:.1f} / {result.p99_ms:.1f} ms ({result.requests:,} requests{failed})"
