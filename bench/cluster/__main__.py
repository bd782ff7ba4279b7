"""python -m bench.cluster: eventfold's scale-out across hosts, under faults.

Builds a cluster of hosts on this machine (network namespaces joined by veth links and a
bridge): three NATS JetStream nodes, PostgreSQL, two API nodes, two fold workers, a WAN
host for a slow link, and a client host for the load and the probes. Under load it kills,
partitions, slows and restarts parts of it, one scenario at a time, and checks through
the API that every event answered 202 is there exactly once. Run as root:

    python -m bench.cluster                        # every scenario (about 7 minutes)
    python -m bench.cluster --quick                # two of them, shorter (under 2 minutes)
    python -m bench.cluster --scenarios worker-kill,slow-link
    python -m bench.cluster --sizing               # events/s per API node and per worker

Exit status: 0 when nothing acknowledged was lost or duplicated, 1 when something was
(or an API node answered 202 while cut off from NATS), 2 when it could not run.
Everything it made is removed on exit, on Ctrl+C and on failure (the run's folder, with
every service's log, is kept when a run fails, or with --keep).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from bench.cluster import network, runbook
from bench.cluster.deployment import REPOSITORY, missing_requirement
from bench.cluster.postgres import postgres_bindir
from bench.cluster.scenarios import BASELINE, FAULTS, QUICK
from bench.cluster.topology import API, API_PORT, CLIENT, SUBNET
from bench.nats_cluster import nats_server_binary

DRIVER_STOP_SECONDS = 60
INTERRUPTED = 130


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(FAULTS),
        help=f"comma-separated, from: {', '.join(FAULTS)} (default: all), and "
        f"{BASELINE.name} (the load without a fault)",
    )
    parser.add_argument(
        "--hold-scale",
        type=float,
        default=1.0,
        help="hold every fault this many times longer (default 1)",
    )
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, shorter")
    parser.add_argument("--rate", type=float, default=1500, help="events/s offered (default 1500)")
    parser.add_argument(
        "--sizing",
        action="store_true",
        help="instead of the faults, measure events/s per API node and per worker, and "
        "what JetStream adds to a request's latency",
    )
    parser.add_argument(
        "--print-topology",
        action="store_true",
        help="print each host's command line and settings (as docs/deploy.md shows them)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, data)")
    parser.add_argument(
        "--results", type=Path, help="write each scenario's figures and notes here (JSON)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an EVENTFOLD_* setting for the API nodes and workers, e.g. "
        "NATS_ACK_WAIT_SECONDS=5 (repeatable; default: the documented defaults)",
    )
    args = parser.parse_args()
    for name in args.scenarios.split(","):
        if name not in FAULTS and name != BASELINE.name:
            parser.error(f"no scenario {name!r}; choose from {', '.join(FAULTS)}")
    return args


def main() -> int:
    args = _arguments()
    if args.print_topology:
        print(runbook.topology())
        return 0
    reason = missing_requirement()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="eventfold-cluster-"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user, in a folder below this one
    scenarios = ",".join(QUICK) if args.quick else args.scenarios
    driver_args = [
        f"--folder={folder}",
        f"--scenarios={scenarios}",
        f"--rate={args.rate}",
        f"--warmup={3 if args.quick else 5}",
        f"--after={6 if args.quick else 15}",
        f"--hold-scale={0.6 if args.quick else args.hold_scale}",
        f"--nats-binary={nats_server_binary()}",
        f"--postgres-bindir={postgres_bindir()}",
        *(f"--setting={setting}" for setting in args.setting),
        *(["--sizing=8"] if args.sizing else []),
    ]
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    started = time.monotonic()
    net = network.Network()
    driver: subprocess.Popen[bytes] | None = None
    status = 2
    try:
        net.setup()
        where = "from the machine's own namespace"
        print(f"containment: {network.check_fails_at_once(API[0].address, API_PORT, where)}")
        print(f"hosts: {len(net.hosts)} namespaces and a switch on {SUBNET}; logs in {folder}")
        sys.stdout.flush()
        driver = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                CLIENT.namespace,
                sys.executable,
                "-m",
                "bench.cluster.driver",
                *driver_args,
            ],
            cwd=REPOSITORY,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    path for path in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if path
                ),
            },
            start_new_session=True,  # Ctrl+C reaches this process, which stops it in order
        )
        status = driver.wait()
    except network.NetworkError as error:
        print(f"bench.cluster: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench.cluster: interrupted; tearing everything down", file=sys.stderr)
        status = INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not stop this
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if driver is not None and driver.poll() is None:
            driver.send_signal(signal.SIGTERM)
            try:
                driver.wait(timeout=DRIVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()
        net.teardown()
        if args.results is not None and (folder / "results.json").exists():
            shutil.copyfile(folder / "results.json", args.results)
        print(f"bench.cluster: {time.monotonic() - started:.0f} s, everything torn down")
        # Kept when something went wrong (for its logs), not when all went well or the
        # run was interrupted.
        if status in (0, INTERRUPTED) and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"bench.cluster: the run's logs and data are in {folder}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
