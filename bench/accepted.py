"""Issue #15's first figure alone: eventfold's accepted events/s on SQLite (100-event
batches, 32 connections, 10 s, wrk) and ceiling (c) right after it, with the validation
cost, in one run; ROUNDS times, alternated, so that a drifting machine shows. With them,
the CPU an accepted event took in the server and in the fold's process (over the load
and the fold's catch-up): backpressure holds the accepted rate to what the fold folds,
and the server and the fold share this machine's two cores, so two cores divided by
their sum bounds the accepted rate in a steady state (over a short run the backlog
backpressure allows, 3 s of the fold's work, may add to it).

    python -m bench.accepted [ROUNDS]

The same runs as ``python -m bench``'s throughput part (``bench.runner`` and
``bench.ceilings``) without its other batch sizes, sweep and modes. It imports whichever
eventfold is first on the path: ``PYTHONPATH=.:$TREE/src`` measures another tree.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.batches import batch_body
from bench.ceilings import minimal_server_ceiling, validation_cost
from bench.runner import FULL, Plan, run_sqlite

PLAN = Plan(seconds=FULL.seconds, batch_sizes=(100,), connections=FULL.connections, sweep=())


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    for number in range(1, rounds + 1):
        row = run_sqlite(PLAN)["by_batch_size"][0]
        accepted = int(row["events_per_second"])
        server, fold = row["server_cpu_us_per_event"], row["fold_cpu_us_per_event"]
        with tempfile.TemporaryDirectory() as folder:
            body_file = Path(folder) / "batch-100.json"
            body_file.write_bytes(batch_body(100))
            ceiling = minimal_server_ceiling(body_file, PLAN.connections, PLAN.seconds)
            validation = validation_cost(body_file.read_bytes())
        print(
            f"round {number}: eventfold accepted {accepted:,} events/s, ceiling (c) "
            f"{ceiling:,.0f}: {accepted / ceiling:.2f}; validation µs an event: msgspec "
            f"decode {validation['msgspec_typed_contract_us_per_event']}, eventfold "
            f"{validation['eventfold_validate_us_per_event']}; {_cpu(server, fold)}",
            flush=True,
        )


def _cpu(server: float | None, fold: float | None) -> str:
    if server is None:
        return "nothing accepted, so no CPU an event"
    if fold is None:
        return f"CPU µs an accepted event: server {server}, fold unknown (its process restarted)"
    return (
        f"CPU µs an accepted event: server {server}, fold {fold}; in a steady state two "
        f"cores take at most {2e6 / (server + fold):,.0f} events/s through both"
    )


if __name__ == "__main__":
    main()
