"""The sustainable rate: the most accepted events/s at which a user still sees each event
in its profile within a second (freshness p99 <= 1 s, no probe event missing).

On a deployment (bench/deployments.py), first a closed loop: ``connections`` connections
of 100-event batches as fast as they go, what a client that pushes gets accepted. Then
paced loads (bench/paced.py) with the freshness probe beside them (bench/freshness.py's
``Prober``: one event for a new person every 0.1 s, its profile polled until it shows),
``step_seconds`` each. A step passes when freshness p99 <= 1 s, no probe event went
missing and none was left unaccepted; it holds when it passed and 90 % of its target was
accepted (not refused with 503, nor left unsent). The first target is half the closed
loop's accepted rate, or twice it when the closed loop passed; that rate bounds nothing
(503s can hold a pushing client below what an even pace gets through). The target
doubles while steps hold, halves while none has, and is then bisected between the
highest that held and the lowest that did not until the two are within 10 %, or
``steps`` have run. After each step the fold catches up before the next starts. The
sustainable rate is the highest accepted rate (202s only; 503s are counted apart) of a
passing step, the closed loop included.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deployments import Deployment, Mode, deployed
from bench.freshness import Prober, ProbeRun, summary
from bench.paced import EVENTS_PER_BATCH, LoadCounts, run_load, write_bodies
from bench.processes import wait_for_fold

FRESHNESS_P99_SECONDS = 1.0
PROBE_INTERVAL_SECONDS = 0.1
CATCH_UP_TIMEOUT_SECONDS = 600.0
# The search stops once the passing and the failing target are this close (a share of
# the passing one), or after ``steps`` paced steps.
RESOLUTION = 0.1
# A paced step that passed goes on to higher targets only when this share of its target
# was accepted (not refused with 503, nor left unsent while every connection waited).
HELD_SHARE = 0.9


@dataclass(frozen=True)
class SearchPlan:
    closed_loop_connections: int
    closed_loop_seconds: float
    step_seconds: float
    steps: int  # the most paced steps after the closed loop
    bodies: int  # distinct 100-event bodies the loads cycle through


@dataclass
class Step:
    load: LoadCounts
    probes: ProbeRun
    catch_up_seconds: float

    @property
    def passed(self) -> bool:
        fresh = summary(self.probes.freshness)
        return (
            fresh["count"] > 0
            and fresh["p99"] <= FRESHNESS_P99_SECONDS
            and self.probes.missing == 0
            and self.probes.unaccepted == 0
        )

    @property
    def held(self) -> bool:
        """Passed, and the server took the load offered (most of the paced target): a step
        whose batches were mostly refused or unsent passes without saying the rate held."""
        target = self.load.target_events_per_second
        accepted = self.load.accepted_events_per_second
        return self.passed and (target is None or accepted >= HELD_SHARE * target)

    def row(self) -> dict[str, Any]:
        fresh = summary(self.probes.freshness)
        return {
            **self.load.figures(),
            "freshness": {k: round(v, 3) for k, v in fresh.items()},
            "probes_missing": self.probes.missing,
            "probes_unaccepted": self.probes.unaccepted,
            "probe_503s_waited_out": self.probes.refusals,
            "fold_catch_up_seconds": round(self.catch_up_seconds, 2),
            "passed": self.passed,
            "held": self.held,
        }


def step(
    deployment: Deployment,
    bodies: Path,
    plan: SearchPlan,
    rate: float | None,
) -> Step:
    """One load (paced at ``rate`` events/s, or the closed loop without) with the probe
    beside it, then the wait until the fold has caught up."""
    seconds = plan.step_seconds if rate is not None else plan.closed_loop_seconds
    prober = Prober(deployment.url, deployment.secret, seconds, PROBE_INTERVAL_SECONDS)
    failures: list[BaseException] = []

    def probe() -> None:
        try:
            prober.run()
        except Exception as error:  # re-raised below, on the benchmark's thread
            failures.append(error)

    probing = threading.Thread(target=probe)
    load = run_load(
        deployment.url,
        deployment.secret,
        bodies,
        plan.bodies,
        rate=rate,
        seconds=seconds,
        connections=plan.closed_loop_connections if rate is None else 64,
        on_ready=probing.start,
    )
    probing.join()
    if failures:
        raise failures[0]
    catch_up = wait_for_fold(deployment.url, timeout=CATCH_UP_TIMEOUT_SECONDS)
    return Step(load, prober.result, catch_up)


def sustainable_rate(deployment: Deployment, bodies: Path, plan: SearchPlan) -> dict[str, Any]:
    """The closed loop, the search's paced steps and the sustainable rate (None when no
    step passed) on ``deployment``, whose fold has caught up."""
    closed = step(deployment, bodies, plan, rate=None)
    steps = [closed]
    accepted = closed.load.accepted_events_per_second
    low = accepted if closed.passed else 0.0  # the highest target that held
    high: float | None = None  # the lowest that did not
    target = 2 * low if low else max(accepted / 2, EVENTS_PER_BATCH)
    for _ in range(plan.steps):
        paced = step(deployment, bodies, plan, rate=target)
        steps.append(paced)
        if paced.held:
            low = target
        else:
            high = target
        if high is None:
            target = 2 * low
        elif low == 0:
            target = high / 2
        elif high - low <= RESOLUTION * low:
            break
        else:
            target = (low + high) / 2
    passing = [s.load.accepted_events_per_second for s in steps if s.passed]
    return {
        "sustainable_events_per_second": round(max(passing)) if passing else None,
        "closed_loop": closed.row(),
        "steps": [s.row() for s in steps[1:]],
    }


def table(name: str, found: dict[str, Any]) -> list[str]:
    """The search's steps, for the printed report."""
    lines = [
        "",
        f"{name}: sustainable rate (freshness p99 <= {FRESHNESS_P99_SECONDS:g} s, "
        "no probe missing)",
        f"{'load':>14} {'accepted/s':>10} {'503s':>6} {'unsent':>6} {'p99 ms':>8} "
        f"{'fresh p50':>9} {'fresh p99':>9} {'probes':>6} {'missing':>7} {'pass':>5}",
    ]
    closed = found["closed_loop"]
    for row in [closed, *found["steps"]]:
        target = row["target_events_per_second"]
        load = f"{row['connections']} conns" if target is None else f"{target:,.0f}/s"
        fresh = row["freshness"]
        lines.append(
            f"{load:>14} {row['accepted_events_per_second']:>10,} {row['refused']:>6} "
            f"{row['unsent']:>6} {row['p99_ms']:>8.1f} {fresh.get('p50', float('nan')):>9.3f} "
            f"{fresh.get('p99', float('nan')):>9.3f} {fresh['count']:>6} "
            f"{row['probes_missing'] + row['probes_unaccepted']:>7} "
            f"{_verdict(row):>5}"
        )
    if any(_verdict(row) == "short" for row in found["steps"]):
        lines.append("(short: freshness held, but less than 90 % of the target was accepted)")
    best = found["sustainable_events_per_second"]
    lines.append(
        f"{name}: sustainable {best:,} events/s" if best is not None else f"{name}: no step passed"
    )
    return lines


def _verdict(row: dict[str, Any]) -> str:
    if not row["passed"]:
        return "no"
    return "yes" if row.get("held", True) else "short"


def fresh_search(
    plan: SearchPlan,
    mode: Mode = "sqlite",
    postgres: str = "",
    env: dict[str, str] | None = None,
    prepare: Callable[[Deployment], None] | None = None,
) -> dict[str, Any]:
    """``sustainable_rate`` on a fresh deployment of ``mode`` (``env``: the server's
    settings), once ``prepare`` has set it up."""
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", plan.bodies)
        with deployed(mode, Path(folder) / "deployment", postgres, env=env) as deployment:
            if prepare is not None:
                prepare(deployment)
            return sustainable_rate(deployment, bodies, plan)
