"""The fold's own rate and its CPU per event, apart from ingest.

``eventfold serve`` runs with the fold off (``EVENTFOLD_FOLD_IN_SERVER=false``) and its
backpressure out of reach; a backlog of distinct realistic 100-event batches is posted
(bench/paced.py, closed loop, once through the bodies); then ``workers`` ``eventfold
worker`` processes start, and the backlog is read from the server's /healthz every
``POLL_SECONDS`` until it is empty. The rate and the CPU are taken from the first reading
that shows progress to the first that shows none left, so the workers' start-up (imports,
connections) is left out; each worker's CPU is its utime + stime from /proc/PID/stat,
PostgreSQL's that of the ``postgres`` processes that serve the deployment's database and
the ones shared by all databases (``postgres_cpu``), the NATS nodes' that of this
deployment's three ``nats-server`` processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deployments import Deployment
from bench.paced import EVENTS_PER_BATCH, run_load

POLL_SECONDS = 0.25
FOLD_TIMEOUT_SECONDS = 1200.0
# The server the backlog is posted to: its fold off, its backpressure out of reach (the
# backlog is the point), and the lag read often enough to time the fold by it.
SERVER_ENV = {
    "EVENTFOLD_MAX_FOLD_LAG_SECONDS": "1e9",
    "EVENTFOLD_MAX_FOLD_LAG_EVENTS": str(10**12),
    "EVENTFOLD_FOLD_LAG_CACHE_SECONDS": str(POLL_SECONDS / 2),
}


class ProgramCpu:
    """CPU seconds used since its creation by this machine's processes named ``program``
    (those whose command line ``include`` accepts, if given), those that started
    meanwhile included, and those that ended up to their last reading. (A sum over the
    processes alive at each end, as ``ceilings.cpu_seconds_of`` takes, loses what ended
    meanwhile: autovacuum workers, closed connections, enough to make it negative.)"""

    def __init__(self, program: str, include: Callable[[str], bool] | None = None) -> None:
        self._program = program
        self._include = include
        self._start = self._snapshot()
        self._seen = dict(self._start)

    def read(self) -> float:
        self._seen.update(self._snapshot())
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._seen.items())

    def _snapshot(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                name, _, rest = stat.read_text().rpartition(") ")
                if not name.endswith(f"({self._program}"):
                    continue
                if self._include is not None:
                    title = stat.with_name("cmdline").read_bytes().replace(b"\0", b" ")
                    if not self._include(title.decode(errors="replace")):
                        continue
            except OSError:
                continue  # gone meanwhile
            fields = rest.split()
            found[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
        ticks = os.sysconf("SC_CLK_TCK")
        return {pid: value / ticks for pid, value in found.items()}


# PostgreSQL's processes that work for every database: their CPU counts too (other
# databases' writes included, when other clients use the same server meanwhile).
_POSTGRES_SHARED = ("walwriter", "checkpointer", "background writer")


def postgres_cpu(database_url: str) -> ProgramCpu:
    """PostgreSQL's CPU for one database: the backends connected to it (their process
    title names it), its autovacuum workers, and the WAL writer, checkpointer and
    background writer."""
    database = database_url.rsplit("/", 1)[-1]

    def include(title: str) -> bool:
        return database in title.split() or any(shared in title for shared in _POSTGRES_SHARED)

    return ProgramCpu("postgres", include)


@dataclass(frozen=True)
class Reading:
    at: float  # monotonic seconds
    backlog: int
    workers_cpu: float  # seconds
    postgres_cpu: float
    nats_cpu: float


def _read(deployment: Deployment, postgres: ProgramCpu | None) -> Reading | None:
    backlog = deployment.backlog()
    if backlog is None:
        return None
    return Reading(
        time.monotonic(),
        backlog,
        deployment.workers_cpu_seconds(),
        postgres.read() if postgres is not None else 0.0,
        deployment.nats_cpu_seconds(),
    )


def fold_rate(deployment: Deployment, bodies: Path, batches: int, workers: int) -> dict[str, Any]:
    """Posts ``batches`` bodies of ``bodies`` to ``deployment`` (whose fold is off), then
    times ``workers`` worker processes through the backlog."""
    loaded = run_load(deployment.url, deployment.secret, bodies, batches, connections=8)
    if loaded.accepted != batches:
        raise RuntimeError(f"the backlog was not all accepted: {loaded.figures()}")
    time.sleep(POLL_SECONDS)  # a reading of the lag cached before the last batch expires
    postgres = None
    if not deployment.database_url.startswith("sqlite"):
        postgres = postgres_cpu(deployment.database_url)
    before = _read(deployment, postgres)
    if before is None:
        raise RuntimeError("the server cannot tell its backlog (/healthz lag is null)")
    deployment.start_workers(workers)
    started = time.monotonic()
    readings = [before]
    while readings[-1].backlog > 0:
        if time.monotonic() - started > FOLD_TIMEOUT_SECONDS:
            raise RuntimeError(f"{workers} workers did not fold the backlog in time")
        time.sleep(POLL_SECONDS)
        reading = _read(deployment, postgres)
        if reading is not None:
            readings.append(reading)
    end = readings[-1]
    # From the first reading that shows progress: the workers are up and folding. With a
    # backlog folded before a second reading (a tiny one), from the workers' start.
    first = next((r for r in readings[1:-1] if r.backlog < before.backlog), before)
    folded = first.backlog
    seconds = end.at - (first.at if first is not before else started)
    deployment.stop_workers()
    return {
        "workers": workers,
        "backlog_events": before.backlog,
        "loaded_events_per_second": round(loaded.accepted_events_per_second),
        "timed_events": folded,
        "timed_from_workers_start": first is before,
        "fold_events_per_second": round(folded / seconds) if seconds > 0 else None,
        "workers_start_to_empty_seconds": round(end.at - started, 2),
        # /proc counts CPU in 10 ms ticks: a small backlog (--quick) can fold within
        # readings that show none, and then the workers' whole CPU (start-up included)
        # is the figure, rather than none.
        "workers_cpu_us_per_event": _per_event(end.workers_cpu - first.workers_cpu, folded)
        or _per_event(end.workers_cpu, folded),
        # How many of the machine's cores the workers kept busy meanwhile.
        "workers_cores_used": round((end.workers_cpu - first.workers_cpu) / seconds, 2)
        if seconds > 0
        else None,
        "postgres_cpu_us_per_event": _per_event(end.postgres_cpu - first.postgres_cpu, folded),
        "nats_cpu_us_per_event": _per_event(end.nats_cpu - first.nats_cpu, folded),
    }


def _per_event(cpu_seconds: float, events: int) -> float | None:
    if cpu_seconds <= 0 or events <= 0:
        return None
    return round(cpu_seconds / events * 1e6, 1)


def table(runs: dict[str, Any], names: dict[str, str]) -> list[str]:
    """The fold's rates, for the printed report."""
    lines = [
        "",
        f"The fold alone: eventfold worker processes through a backlog of "
        f"{EVENTS_PER_BATCH}-event batches (the server's fold off; cores: the workers' CPU "
        "seconds a second)",
        f"{'mode':<22} {'workers':>7} {'backlog':>8} {'fold ev/s':>10} {'worker µs/ev':>12} "
        f"{'cores':>5} {'PG µs/ev':>9} {'NATS µs/ev':>10} {'start to empty s':>16}",
    ]
    for key, rows in runs.items():
        if "skipped" in rows:
            lines.append(f"{names[key]:<22} skipped: {rows['skipped']}")
            continue
        for row in rows:
            lines.append(
                f"{names[key]:<22} {row['workers']:>7} {row['backlog_events']:>8} "
                f"{_shown(row['fold_events_per_second'], ',')} "
                f"{_shown(row['workers_cpu_us_per_event'], '.1f', 12)} "
                f"{_shown(row['workers_cores_used'], '.2f', 5)} "
                f"{_shown(row['postgres_cpu_us_per_event'], '.1f', 9)} "
                f"{_shown(row['nats_cpu_us_per_event'], '.1f')} "
                f"{row['workers_start_to_empty_seconds']:>16}"
            )
    return lines


def _shown(value: float | None, spec: str, width: int = 10) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"
