"""The harness's inner half: ``python -m bench.cluster`` runs it inside the client host's
namespace (no default route) once the network is up. It starts PostgreSQL and the
cluster, runs the load for the whole run, injects each fault, checks, and prints a line
per scenario and the table; exit status 1 when anything acknowledged was lost or
duplicated, or an API node answered 202 while cut off from NATS.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psycopg

from bench.cluster import network, sizing
from bench.cluster.check import recheck, verify
from bench.cluster.deployment import Deployment
from bench.cluster.ledger import Ledger
from bench.cluster.load import Load
from bench.cluster.postgres import PostgresServer
from bench.cluster.report import (
    Outcome,
    answers_during,
    by_node,
    freshness_after,
    judge_cut_off_node,
    longest_without_202,
    probe_freshness,
    table,
)
from bench.cluster.scenarios import BASELINE, FAULTS, Fault
from bench.cluster.topology import API, API_PORT, CLIENT, api_url
from bench.cluster.visibility import VisibilityWatcher
from eventfold.settings import Settings

# Beyond the publish timeout: how long a cut-off API node stays cut off at least.
CUT_OFF_MARGIN = 3.0


@dataclass
class Pending:
    """A scenario whose fault is over, waiting for its check."""

    ledger: Ledger
    fault: Fault
    what: str
    began: float
    injected: float
    healed: float
    ended: float = 0.0  # when the load moved on to the next scenario


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def check_containment() -> None:
    """With the client's link down, a connection to a test host fails at once: there is
    no other route for it to take out of the machine."""
    network.link_down(CLIENT)
    try:
        where = f"with {CLIENT.name}'s link down"
        line = network.check_fails_at_once(API[0].address, API_PORT, where)
    finally:
        network.link_up(CLIENT)
    print(f"containment: {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--scenarios", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--after", type=float, required=True)
    parser.add_argument("--hold-scale", type=float, default=1.0)
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--sizing", type=int, default=0, help="seconds per measurement")
    parser.add_argument("--nats-binary", required=True)
    parser.add_argument("--postgres-bindir", required=True)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    check_containment()
    settings = dict(setting.split("=", 1) for setting in args.setting)
    if args.sizing:
        settings = {**sizing.SETTINGS, **settings}
    postgres = PostgresServer(args.folder, args.postgres_bindir)
    postgres.initialise()
    postgres.start()
    try:
        with psycopg.connect(f"{postgres.url}/postgres", autocommit=True) as admin:
            admin.execute("CREATE DATABASE eventfold")  # a new server per run: fresh
        database_url = f"{postgres.url}/eventfold"
        cluster = Deployment(args.folder, database_url, args.nats_binary, postgres, settings)
        try:
            cluster.start()
            if args.sizing:
                rows = sizing.measure(cluster, args.folder, args.sizing)
                print("\n| measured | figure |\n|---|---|")
                print("\n".join(f"| {what} | {figure} |" for what, figure in rows))
                return 0
            outcomes = run(cluster, args.scenarios.split(","), args)
        finally:
            cluster.stop()
    finally:
        postgres.stop()
    results = [asdict(outcome) for outcome in outcomes]
    (args.folder / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print()
    print(table(outcomes))
    failed = [outcome.name for outcome in outcomes if outcome.failed]
    if failed:
        names = ", ".join(failed)
        print(
            f"FAILED in {names}: something acknowledged was lost or duplicated, or an API "
            "node answered 202 while cut off or did not recover (see the lines above)"
        )
        return 1
    print("nothing acknowledged was lost or duplicated in any scenario")
    return 0


def run(cluster: Deployment, names: list[str], args: argparse.Namespace) -> list[Outcome]:
    bound = Settings().max_fold_lag_seconds
    keys = cluster.create_keys([f"s{i}-{name}" for i, name in enumerate(names, start=1)])
    urls = [api_url(host) for host in API]
    through = ", ".join(urls)
    print(f"cluster up; load: {args.rate:g} events/s in 100-event batches through {through}")
    load = Load(urls, args.rate)
    watcher = VisibilityWatcher(urls)
    outcomes: list[Outcome] = []
    pending: Pending | None = None
    try:
        for (account, secret), name in zip(keys.items(), names, strict=True):
            ledger = Ledger(account.partition("-")[0], secret)
            started = time.monotonic()
            watcher.watch(ledger)
            load.switch(ledger)
            _log(args.folder, f"load now on {account}")
            if pending is not None:
                pending.ended = started
                outcomes.append(_finish(cluster, load, watcher, urls, pending, bound))
            cluster.wait_until_whole()
            time.sleep(max(0.0, args.warmup - (time.monotonic() - started)))
            fault = FAULTS.get(name, BASELINE)
            began = time.monotonic()
            what, heal = fault.inject(cluster)
            injected = time.monotonic()
            _log(args.folder, f"{name}: injected: {what}")
            hold = fault.hold * args.hold_scale
            if fault.cut_off_api is not None:
                # Long enough for requests sent meanwhile to be answered meanwhile.
                hold = max(hold, Settings().nats_publish_timeout_seconds + CUT_OFF_MARGIN)
            time.sleep(hold)
            healed = time.monotonic()
            heal()
            _log(args.folder, f"{name}: healed")
            time.sleep(args.after)
            pending = Pending(ledger, fault, what, began, injected, healed)
        load.switch(None)
        if pending is not None:
            pending.ended = time.monotonic()
            outcomes.append(_finish(cluster, load, watcher, urls, pending, bound))
        for outcome, secret in zip(outcomes, keys.values(), strict=True):
            changed = recheck(urls, secret, outcome.verdict)
            if changed:
                outcome.problems.append(f"profiles changed by {changed} events after the check")
        print(f"rechecked every profile at the end: {_changes(outcomes)}")
    finally:
        load.stop()
        watcher.stop()
    return outcomes


def _changes(outcomes: list[Outcome]) -> str:
    changed = [o.name for o in outcomes if any("after the check" in p for p in o.problems)]
    return f"changed in {', '.join(changed)}" if changed else "none changed"


def _log(folder: Path, line: str) -> None:
    """The harness's own actions, by wall clock, beside the services' logs."""
    with (folder / "harness.log").open("a", encoding="utf-8") as log:
        log.write(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {line}\n")


def _finish(
    cluster: Deployment,
    load: Load,
    watcher: VisibilityWatcher,
    urls: list[str],
    pending: Pending,
    bound: float,
) -> Outcome:
    """Waits for the scenario's last answers, checks it and prints its line."""
    ledger, fault = pending.ledger, pending.fault
    load.drain(ledger)
    verdict = verify(urls, ledger)
    try:
        stream = cluster.stream_state()
    except RuntimeError as error:
        stream = str(error)
    watcher.forget(ledger)
    refused, unanswered, reasons = answers_during(ledger, pending.began, pending.healed)
    outcome = Outcome(
        fault.name,
        pending.what,
        pending.healed - pending.began,
        verdict,
        freshness_after(ledger, pending.healed, time.monotonic()),
        refused,
        unanswered,
    )
    names = [host.name for host in API]
    before = by_node(ledger, pending.began - 5, pending.began, names)
    during = by_node(ledger, pending.injected, pending.healed, names)
    outcome.notes.append(f"before the fault: {before}; during it: {during}")
    outcome.notes.append(f"after the check: {stream}")
    outcome.notes.append(probe_freshness(ledger))
    if reasons:
        outcome.notes.append(f"during the fault: {reasons}")
    refused_after, _, reasons_after = answers_during(ledger, pending.healed, pending.ended)
    if refused_after:
        outcome.notes.append(f"{refused_after} answered 503 after the heal: {reasons_after}")
    unsure = {a.batch for a in ledger.attempts if "may or may not" in a.reason}
    if unsure:
        retried = len(unsure & ledger.acknowledged.keys())
        outcome.notes.append(
            f"{len(unsure)} batches were answered 503 'may or may not have been stored'; "
            f"{retried} of them were retried to a 202"
        )
    gap, at = longest_without_202(ledger, pending.began, pending.ended)
    outcome.notes.append(f"longest stretch without a 202: {gap:.1f} s, from fault +{at:.1f} s")
    if verdict.unfolded or verdict.seconds_until_complete > 60:
        outcome.notes.append(
            f"the read-back took {verdict.seconds_until_complete:.0f} s to find everything"
        )
    if fault.cut_off_api is not None:
        node = fault.cut_off_api
        problems, notes = judge_cut_off_node(
            ledger, node, API[node].name, pending.injected, pending.healed
        )
        outcome.problems += problems
        outcome.notes += notes
    print(outcome.line(bound), flush=True)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
