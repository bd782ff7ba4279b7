"""Webhook deliveries: how many messages a server delivers per second to a local
receiver, and how long from an event's 202 to its message's arrival (p50/p99), alone
and with a dead endpoint (it never answers) beside the live one.

    python -m bench.webhooks [--quick] [--postgres postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx2

from bench.processes import (
    PostgresUnreachable,
    create_key,
    free_port,
    fresh_postgres_database,
    start_server,
    wait_until_listening,
)
from bench.webhook_receiver import BenchReceiver, bench_receiver

SERVER_ENV = {
    "EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE": "true",
    "EVENTFOLD_WEBHOOK_TIMEOUT_SECONDS": "2",
    "EVENTFOLD_WEBHOOK_LEASE_SECONDS": "10",
    "EVENTFOLD_LOG_FORMAT": "text",
}


def run_webhooks(quick: bool, postgres_server: str | None) -> dict[str, Any]:
    """The figures for SQLite, and PostgreSQL when ``postgres_server`` answers."""
    results = {"sqlite": _run_backend(quick, None)}
    if postgres_server:
        try:
            with fresh_postgres_database(postgres_server) as url:
                results["postgres"] = _run_backend(quick, url)
        except PostgresUnreachable as error:
            results["postgres"] = {"skipped": str(error)}
    return results


def _run_backend(quick: bool, database_url: str | None) -> dict[str, Any]:
    burst = 500 if quick else 5_000
    paced = 20 if quick else 150
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        url_of_database = database_url or f"sqlite:///{Path(folder) / 'webhooks.db'}"
        secret = create_key(url_of_database)
        port = free_port()
        server = start_server(url_of_database, port, SERVER_ENV)
        stack.callback(_stop, server)
        wait_until_listening(port)
        api = stack.enter_context(
            httpx2.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
        )
        live = stack.enter_context(bench_receiver())
        _subscribe(api, live.url)
        throughput = _burst(api, live, burst)
        alone = _paced(api, live, paced, "alone")
        dead = stack.enter_context(bench_receiver(answer=False))
        _subscribe(api, dead.url)
        beside_dead = _paced(api, live, paced, "dead")
        beside_dead["dead_endpoint_requests"] = dead.requests
        ratio = beside_dead["p50_ms"] / alone["p50_ms"] if alone["p50_ms"] else None
        return {
            "deliveries": throughput,
            "latency_alone": alone,
            "latency_beside_dead_endpoint": beside_dead,
            "p50_ratio_beside_dead": round(ratio, 2) if ratio else None,
        }


def _subscribe(api: httpx2.Client, url: str) -> None:
    answer = api.post("/api/v0/webhooks", json={"url": url, "types": ["event.matched"]})
    answer.raise_for_status()


def _burst(api: httpx2.Client, receiver: BenchReceiver, count: int) -> dict[str, Any]:
    """``count`` events (one person each) posted at once; deliveries/s from the first
    message's arrival to the last's."""
    started = time.time()
    for start in range(0, count, 500):
        events = [
            {"action": "purchase", "email": f"burst{n}@bench.example"}
            for n in range(start, min(count, start + 500))
        ]
        api.post("/api/v0/events", json={"events": events}).raise_for_status()
    posted = time.time()
    _wait_for(receiver, count, timeout=300)
    arrivals = sorted(receiver.arrivals.values())[-count:]
    spread = max(arrivals[-1] - arrivals[0], 1e-6)
    return {
        "messages": count,
        "deliveries_per_second": round((count - 1) / spread),
        "post_seconds": round(posted - started, 3),
        "first_to_last_seconds": round(spread, 3),
        "receiver_requests": receiver.requests,
    }


def _paced(api: httpx2.Client, receiver: BenchReceiver, count: int, tag: str) -> dict[str, Any]:
    """One event every 50 ms; each one's wait from its 202 to its message's arrival."""
    sent: dict[str, float] = {}
    before = len(receiver.arrivals)
    for n in range(count):
        email = f"{tag}{n}@bench.example"
        api.post("/api/v0/events", json={"events": [{"action": "visit", "email": email}]})
        sent[email] = time.time()
        time.sleep(0.05)
    _wait_for(receiver, before + count, timeout=120)
    latencies = []
    for message_id, arrived in receiver.arrivals.items():
        body = json.loads(receiver.bodies[message_id])
        email = body["data"]["event"]["email"]
        if email in sent:
            latencies.append((arrived - sent[email]) * 1000)
    latencies.sort()
    return {
        "events": count,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "max_ms": round(latencies[-1], 1),
    }


def _wait_for(receiver: BenchReceiver, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.arrivals) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(receiver.arrivals)} of {count} messages arrived")
        time.sleep(0.01)


def _stop(server: Any) -> None:
    server.terminate()
    server.wait(30)


def table(results: dict[str, Any]) -> list[str]:
    lines = ["", "Webhooks: deliveries to a local receiver, event 202 -> message arrival"]
    lines.append(
        f"{'backend':>9} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p50 dead':>9} {'p99 dead':>9} {'ratio':>6}"
    )
    for backend, figures in results.items():
        if "skipped" in figures:
            lines.append(f"{backend:>9} skipped: {figures['skipped']}")
            continue
        alone, dead = figures["latency_alone"], figures["latency_beside_dead_endpoint"]
        lines.append(
            f"{backend:>9} {figures['deliveries']['deliveries_per_second']:>13} "
            f"{alone['p50_ms']:>8} {alone['p99_ms']:>8} {dead['p50_ms']:>9} "
            f"{dead['p99_ms']:>9} {figures['p50_ratio_beside_dead']:>6}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    results = run_webhooks(args.quick, args.postgres)
    print(json.dumps(results, indent=2))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
