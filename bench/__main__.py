"""python -m bench: eventfold's throughput, latency, freshness and memory, beside the
ceilings of the same machine, and what users feel: the sustainable rate (freshness p99
<= 1 s) and the fold's own rate. Prints tables and writes JSON (a chart with --chart).

    python -m bench                      # the full run (about 25 minutes)
    python -m bench --only sustainable,fold   # the user-facing parts alone
    python -m bench --only webhooks      # webhook deliveries/s and latency (also bench.webhooks)
    python -m bench --quick              # a smoke run: checks that the benchmark works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.batches import batch_body
from bench.ceilings import (
    http_ceiling,
    minimal_server_ceiling,
    postgres_storage_ceiling,
    sqlite_storage_ceiling,
    validation_cost,
)
from bench.runner import FULL, QUICK, Plan, run_nats, run_postgres, run_sqlite
from bench.user_facing import FULL_USERS, QUICK_USERS, run_fold, run_sustainable, tables
from bench.webhooks import run_webhooks
from bench.webhooks import table as webhook_table

PARTS = ("throughput", "sustainable", "fold", "webhooks", "segments")
# bench.segments' sizes: events folded, people they name, profiles the backfill covers.
SEGMENT_SIZES = {"quick": (2_000, 500, 1_000), "full": (30_000, 10_000, 1_000_000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny load, for CI")
    parser.add_argument("--output", type=Path, default=Path("bench/results/latest.json"))
    parser.add_argument("--chart", type=Path, help="write a PNG of throughput against p99")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server for the PostgreSQL mode (a database is made)",
    )
    parser.add_argument(
        "--nats-sync-cost",
        action="store_true",
        help="also run the NATS mode without sync_interval: always, to show its cost",
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=PARTS,
        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    users = QUICK_USERS if args.quick else FULL_USERS

    results: dict[str, Any] = {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "plan": plan.__dict__,
        "parts": list(args.only),
    }
    # How busy the machine was (the 1-minute load average on 2 cores), part by part.
    results["load_average"] = {}
    if "throughput" in args.only:
        before = os.getloadavg()[0]
        _throughput(results, plan, args)
        results["load_average"]["throughput"] = [before, os.getloadavg()[0]]
    if "sustainable" in args.only:
        results["user_plan"] = asdict(users)
        before = os.getloadavg()[0]
        results["sustainable"] = run_sustainable(users, args.postgres)
        results["load_average"]["sustainable"] = [before, os.getloadavg()[0]]
    if "fold" in args.only:
        results["user_plan"] = asdict(users)
        before = os.getloadavg()[0]
        results["fold"] = run_fold(users, args.postgres)
        results["load_average"]["fold"] = [before, os.getloadavg()[0]]
    if "webhooks" in args.only:
        before = os.getloadavg()[0]
        results["webhooks"] = run_webhooks(args.quick, args.postgres)
        results["load_average"]["webhooks"] = [before, os.getloadavg()[0]]
    if "ceilings" in results and "sustainable" in results:
        _sustainable_against_minimal_server(results)
    if "segments" in args.only:
        from bench.segments import run_segments

        before = os.getloadavg()[0]
        sizes = SEGMENT_SIZES["quick" if args.quick else "full"]
        results["segments"] = {
            backend: run_segments(backend, *sizes) for backend in ("sqlite", "postgres")
        }
        results["load_average"]["segments"] = [before, os.getloadavg()[0]]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(_table(results))
    print(f"\nwritten to {args.output}")
    if args.chart and "sqlite" in results:
        from bench.chart import draw

        draw(results["sqlite"]["sweep_100"], args.chart)
        print(f"chart written to {args.chart}")


def _parts(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PARTS)}")
    return chosen


def _throughput(results: dict[str, Any], plan: Plan, args: argparse.Namespace) -> None:
    """The throughput modes and the ceilings (the figures of the earlier runs)."""
    results["sqlite"] = run_sqlite(plan)
    # The ceilings right after the SQLite mode they are compared with: this machine's
    # speed drifts within minutes, and the other modes take several.
    with tempfile.TemporaryDirectory() as folder:
        body_file = Path(folder) / "batch-100.json"
        body_file.write_bytes(batch_body(100))
        http = http_ceiling(body_file, plan.connections, plan.seconds) * 100
        storage = sqlite_storage_ceiling(body_file.read_bytes(), plan.seconds)
        minimal = minimal_server_ceiling(body_file, plan.connections, plan.seconds)
        postgres = postgres_storage_ceiling(body_file.read_bytes(), plan.seconds, args.postgres)
        validation = validation_cost(body_file.read_bytes())
    best = _best_100_event_rate(results["sqlite"])
    accepted = _100_event_rate(results["sqlite"])
    results["ceilings"] = {
        "http_202_no_work_events_per_second": round(http),
        "in_process_validate_and_store_events_per_second": round(storage),
        "minimal_server_events_per_second": round(minimal),
        "eventfold_100_event_batches_events_per_second": best,
        "ratio_to_lower_ceiling": round(best / min(http, storage), 2),
        "eventfold_accepted_events_per_second": accepted,
        "accepted_ratio_to_minimal_server": round(accepted / minimal, 2),
        "postgres_in_process_validate_and_store": postgres,
        "validation": validation,
    }
    results["postgres"] = run_postgres(plan, args.postgres)
    results["nats"] = run_nats(plan, args.postgres)
    if args.nats_sync_cost:
        results["nats_without_sync"] = run_nats(plan, args.postgres, sync_always=False)


def _best_100_event_rate(mode: dict[str, Any]) -> int:
    rows = mode["sweep_100"] + [r for r in mode["by_batch_size"] if r["batch_size"] == 100]
    return max(int(row["events_per_second"]) for row in rows)


def _100_event_rate(mode: dict[str, Any]) -> int:
    """Accepted events/s of the batch-size run of 100 events (the plan's connections)."""
    return next(
        int(r["events_per_second"]) for r in mode["by_batch_size"] if r["batch_size"] == 100
    )


def _sustainable_against_minimal_server(results: dict[str, Any]) -> None:
    """eventfold's sustainable rate (SQLite) as a share of ceiling (c), both from this run."""
    found = results["sustainable"].get("sqlite", {})
    rate = found.get("sustainable_events_per_second")
    if rate is None:
        return
    ceilings = results["ceilings"]
    ceilings["eventfold_sustainable_events_per_second"] = rate
    ceilings["sustainable_ratio_to_minimal_server"] = round(
        rate / ceilings["minimal_server_events_per_second"], 2
    )


def _machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


_SERVER_MODES = {
    "postgres": "PostgreSQL",
    "nats": "NATS JetStream (3 nodes, sync always) + PostgreSQL",
    "nats_without_sync": "NATS JetStream (3 nodes, default sync) + PostgreSQL",
}


def _table(results: dict[str, Any]) -> str:
    lines = _throughput_table(results) if "sqlite" in results else []
    lines += tables(results)
    if "webhooks" in results:
        lines += webhook_table(results["webhooks"])
    for backend, figures in results.get("segments", {}).items():
        backfill = figures["backfill"]
        lines.append(
            f"\nsegments, {backend}: fold {figures['fold_events_per_second_no_segments']:,}"
            f" events/s with none, {figures['fold_events_per_second_50_segments']:,} with 50"
            f" ({figures['ratio']} of it); append to feed p99"
            f" {figures['feed_latency_ms']['p99']} ms; backfill of {backfill['profiles']:,}"
            f" profiles {backfill['seconds']} s (slowest append meanwhile"
            f" {backfill['slowest_append_ms']} ms)"
        )
    loads = ", ".join(
        f"{part} {before:.1f} -> {after:.1f}"
        for part, (before, after) in results["load_average"].items()
    )
    lines.append(f"\nload average (1 min, {results['machine']['cpus']} cores): {loads}")
    return "\n".join(lines)


def _throughput_table(results: dict[str, Any]) -> list[str]:
    lines = _mode_table("SQLite", results["sqlite"], results["plan"]["connections"])
    for key, name in _SERVER_MODES.items():
        if key not in results:
            continue
        if "skipped" in results[key]:
            lines.append(f"\n{name}: {results[key]['skipped']}")
        else:
            lines += _mode_table(name, results[key], results["plan"]["connections"])
    ceilings = results["ceilings"]
    lines += [
        "",
        f"ceiling (a) HTTP 202 without work: {ceilings['http_202_no_work_events_per_second']}"
        " events/s (as 100-event batches)",
        "ceiling (b) validate + store in-process (SQLite): "
        f"{ceilings['in_process_validate_and_store_events_per_second']} events/s",
        f"eventfold (SQLite) / lower ceiling: {ceilings['ratio_to_lower_ceiling']}",
        "ceiling (c) minimal server (raw ASGI, typed validation, durable append): "
        f"{ceilings['minimal_server_events_per_second']} events/s",
        f"eventfold (SQLite) accepted, 100-event batches, {results['plan']['connections']} "
        f"connections: {ceilings['eventfold_accepted_events_per_second']} events/s = "
        f"{ceilings['accepted_ratio_to_minimal_server']} of (c)",
    ]
    if "sustainable_ratio_to_minimal_server" in ceilings:
        lines.append(
            "eventfold (SQLite) sustainable: "
            f"{ceilings['eventfold_sustainable_events_per_second']} events/s = "
            f"{ceilings['sustainable_ratio_to_minimal_server']} of (c)"
        )
    validation = ceilings["validation"]
    lines.append(
        "validation, µs an event (100-event batches, best of 7): msgspec typed contract "
        f"{validation['msgspec_typed_contract_us_per_event']}, eventfold validate + normalise "
        f"{validation['eventfold_validate_us_per_event']}"
    )
    postgres = ceilings["postgres_in_process_validate_and_store"]
    if "skipped" not in postgres:
        lines.append(
            f"ceiling (b) validate + store in-process (PostgreSQL): "
            f"{postgres['events_per_second']} events/s, PostgreSQL's own CPU "
            f"{postgres['postgres_cpu_us_per_event']} µs an event"
        )
    return lines


def _mode_table(name: str, mode: dict[str, Any], connections: int) -> list[str]:
    lines = [
        "",
        f"{name}, by batch size (connections: {connections})",
        f"{'batch':>6} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'failed':>7} {'of them 503':>11}",
    ]
    for row in mode["by_batch_size"]:
        lines.append(
            f"{row['batch_size']:>6} {row['requests_per_second']:>9.1f} "
            f"{row['events_per_second']:>10} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f} {row['failed']:>7} {row.get('refused', 0):>11}"
        )
    lines += [
        "",
        f"{name}, 100-event batches by concurrency",
        f"{'conns':>6} {'events/s':>10} {'p99 ms':>8} {'fresh p50 s':>12} "
        f"{'fresh p99 s':>12} {'catch-up s':>11} {'503s':>6}",
    ]
    for row in mode["sweep_100"]:
        fresh = row["freshness"]
        lines.append(
            f"{row['connections']:>6} {row['events_per_second']:>10} "
            f"{row['p99_ms']:>8.1f} {fresh.get('p50', float('nan')):>12.3f} "
            f"{fresh.get('p99', float('nan')):>12.3f} {row['fold_catch_up_seconds']:>11} "
            f"{row.get('refused', 0):>6}"
        )
    lines.append(f"{name} server peak RSS: {mode['server_peak_rss_mb']} MB")
    return lines


if __name__ == "__main__":
    main()
