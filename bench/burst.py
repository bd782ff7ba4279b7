"""A burst: a pushing client at the most the server accepts for a while (60 s), then
nothing. Reports the largest freshness a well-behaved client saw (the probe of
bench/freshness.py, which waits out 503s), how long the fold took to catch up once the
load stopped, and checks that every accepted event is live: listed through the API
once the fold caught up, each exactly once.

    python -m bench.burst [--mode sqlite|postgres|nats] [--seconds 60]

The bound is ``EVENTFOLD_MAX_FOLD_LAG_SECONDS`` (10 s): no probe event accepted with a
202 may take longer than that to show in its profile (backpressure answers 503 first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.deployments import Mode, deployed
from bench.paced import EVENTS_PER_BATCH, write_bodies
from bench.processes import read_all_events
from bench.sustainable import SearchPlan, step

BOUND_SECONDS = 10.0
BODIES = 200


def burst(mode: Mode, seconds: float, postgres: str, connections: int = 32) -> dict[str, Any]:
    plan = SearchPlan(
        closed_loop_connections=connections,
        closed_loop_seconds=seconds,
        step_seconds=seconds,
        steps=0,
        bodies=BODIES,
    )
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", BODIES)
        with deployed(mode, Path(folder) / "deployment", postgres) as deployment:
            ran = step(deployment, bodies, plan, rate=None)
            listed = read_all_events(deployment.url, deployment.secret)
    load, probes = ran.load, ran.probes
    accepted_events = load.accepted * EVENTS_PER_BATCH + len(probes.freshness) + probes.missing
    # Every event of the run was sent once (the load's batches, the probes' events):
    # one lost shows as fewer listed than accepted, one stored twice as more.
    freshness = sorted(probes.freshness)
    return {
        "mode": mode,
        "seconds": seconds,
        "accepted_events_per_second": round(load.accepted_events_per_second),
        "accepted_batches": load.accepted,
        "refused_503": load.refused,
        "failed": load.failed,
        "probe_events": probes.posted,
        "probe_503s_waited_out": probes.refusals,
        "freshness_max_seconds": round(freshness[-1], 3) if freshness else None,
        "freshness_p99_seconds": ran.row()["freshness"].get("p99"),
        "probes_later_than_bound": sum(1 for f in freshness if f > BOUND_SECONDS),
        "probes_missing": probes.missing,
        "fold_catch_up_seconds": round(ran.catch_up_seconds, 2),
        "events_accepted": accepted_events,
        "events_listed": len(listed),
        "every_event_live": len(listed) == accepted_events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="sqlite", choices=["sqlite", "postgres", "nats"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    print(json.dumps(burst(args.mode, args.seconds, args.postgres), indent=1))


if __name__ == "__main__":
    main()
