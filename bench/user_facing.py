"""The figures users feel, per mode: the sustainable rate (bench/sustainable.py), the
fold's own rate and CPU per event with 1, 2 and 4 worker processes (bench/fold_rate.py),
and for NATS + PostgreSQL with 1, 2 and 4 workers, what a pushing client gets accepted.
Every measurement gets a fresh deployment (bench/deployments.py)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fold_rate, sustainable
from bench.deployments import Mode, Unavailable, deployed
from bench.paced import EVENTS_PER_BATCH, write_bodies
from bench.sustainable import SearchPlan


@dataclass(frozen=True)
class Search:
    key: str  # in the results
    mode: Mode
    workers: int  # worker processes beside a server whose fold is off; 0: the fold in it


@dataclass(frozen=True)
class UserPlan:
    search: SearchPlan
    searches: tuple[Search, ...]
    fold_batches: int  # the backlog, in 100-event batches
    fold_workers: tuple[tuple[Mode, tuple[int, ...]], ...]


_ALL_SEARCHES = (
    Search("sqlite", "sqlite", 0),
    Search("postgres", "postgres", 0),
    Search("nats", "nats", 0),
    Search("nats_1_worker", "nats", 1),
    Search("nats_2_workers", "nats", 2),
    Search("nats_4_workers", "nats", 4),
)
FULL_USERS = UserPlan(
    search=SearchPlan(
        closed_loop_connections=32, closed_loop_seconds=10, step_seconds=12, steps=6, bodies=200
    ),
    searches=_ALL_SEARCHES,
    fold_batches=2_000,
    fold_workers=(("sqlite", (1,)), ("postgres", (1, 2, 4)), ("nats", (1, 2, 4))),
)
QUICK_USERS = UserPlan(
    search=SearchPlan(
        closed_loop_connections=2, closed_loop_seconds=1, step_seconds=1, steps=1, bodies=20
    ),
    searches=(Search("sqlite", "sqlite", 0),),
    fold_batches=30,
    fold_workers=(("sqlite", (1,)), ("nats", (1,))),
)

NAMES = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "nats": "NATS + PostgreSQL",
    "nats_1_worker": "NATS + PG, 1 worker",
    "nats_2_workers": "NATS + PG, 2 workers",
    "nats_4_workers": "NATS + PG, 4 workers",
}


def run_sustainable(plan: UserPlan, postgres: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", plan.search.bodies)
        for search in plan.searches:
            try:
                with deployed(
                    search.mode, Path(folder) / search.key, postgres, workers=search.workers
                ) as deployment:
                    results[search.key] = sustainable.sustainable_rate(
                        deployment, bodies, plan.search
                    )
            except Unavailable as why:
                results[search.key] = {"skipped": str(why)}
            print(f"sustainable rate, {NAMES[search.key]}: done", flush=True)
    return results


def run_fold(plan: UserPlan, postgres: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", plan.fold_batches)
        for mode, worker_counts in plan.fold_workers:
            rows: list[dict[str, Any]] = []
            try:
                for workers in worker_counts:
                    with deployed(
                        mode,
                        Path(folder) / f"{mode}-{workers}",
                        postgres,
                        fold_in_server=False,
                        env=fold_rate.SERVER_ENV,
                    ) as deployment:
                        rows.append(
                            fold_rate.fold_rate(deployment, bodies, plan.fold_batches, workers)
                        )
                    print(f"fold rate, {NAMES[mode]}, {_workers(workers)}: done", flush=True)
            except Unavailable as why:
                results[mode] = {"skipped": str(why)}
                continue
            results[mode] = rows
    return results


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def tables(results: dict[str, Any]) -> list[str]:
    """The printed report of whatever of the user-facing figures ``results`` holds."""
    lines: list[str] = []
    found = results.get("sustainable", {})
    for key, search in found.items():
        if "skipped" in search:
            lines.append(f"\n{NAMES[key]}: skipped: {search['skipped']}")
        else:
            lines += sustainable.table(NAMES[key], search)
    if found:
        lines += _summary(found)
    if "fold" in results:
        lines += fold_rate.table(results["fold"], NAMES)
    lines += _nats_workers(results)
    return lines


def _summary(found: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"What users feel ({EVENTS_PER_BATCH}-event batches; closed loop: as fast as the "
        "connections go; sustainable: freshness p99 <= 1 s)",
        f"{'mode':<22} {'closed loop ev/s':>16} {'503s':>6} {'fresh p99 s':>11} "
        f"{'sustainable ev/s':>16}",
    ]
    for key, search in found.items():
        if "skipped" in search:
            continue
        closed = search["closed_loop"]
        best = search["sustainable_events_per_second"]
        lines.append(
            f"{NAMES[key]:<22} {closed['accepted_events_per_second']:>16,} "
            f"{closed['refused']:>6} {closed['freshness'].get('p99', float('nan')):>11.3f} "
            f"{'none' if best is None else f'{best:,}':>16}"
        )
    return lines


def _nats_workers(results: dict[str, Any]) -> list[str]:
    """NATS + PostgreSQL with 1, 2 and 4 worker processes, from both parts."""
    found = results.get("sustainable", {})
    folds = results.get("fold", {}).get("nats", [])
    fold_by_workers = {row["workers"]: row for row in folds if isinstance(row, dict)}
    counts = sorted(
        {int(key.split("_")[1]) for key in found if key.startswith("nats_")} | set(fold_by_workers)
    )
    if not counts:
        return []
    lines = [
        "",
        "NATS + PostgreSQL, the server's fold off, eventfold worker processes beside it",
        f"{'workers':>7} {'accepted ev/s':>13} {'503s':>6} {'sustainable ev/s':>16} "
        f"{'fold ev/s':>10}",
    ]
    for workers in counts:
        search = found.get(f"nats_{_workers(workers).replace(' ', '_')}", {})
        closed = search.get("closed_loop")
        best = search.get("sustainable_events_per_second")
        fold = fold_by_workers.get(workers, {}).get("fold_events_per_second")
        lines.append(
            f"{workers:>7} "
            f"{'-' if closed is None else format(closed['accepted_events_per_second'], ','):>13} "
            f"{'-' if closed is None else closed['refused']:>6} "
            f"{'-' if best is None else format(best, ','):>16} "
            f"{'-' if fold is None else format(fold, ','):>10}"
        )
    return lines
