"""The CPU each process of a SQLite deployment uses at a paced load: the server and the
fold (its child process, by default, or a worker), and what the load got.

    python -m bench.process_cpu RATE [EVENTFOLD_NAME=VALUE ...]

A fresh ``bench.deployments`` SQLite deployment takes ``bench.paced`` batches (distinct
realistic 100-event bodies) at RATE events/s for 12 s (RATE 0: 32 connections as fast
as they go); each process's utime + stime over the load, from /proc, is printed in
cores (CPU seconds per second), then how long the fold took to catch up. The settings
given go to the server (``EVENTFOLD_FOLD_PROCESS=false``: the fold on its thread).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.deployments import deployed
from bench.paced import run_load, write_bodies
from bench.processes import children, process_cpu_seconds, wait_for_fold

SECONDS = 12.0


def main() -> None:
    rate = float(sys.argv[1])
    env = dict(argument.split("=", 1) for argument in sys.argv[2:])
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", 200)
        with deployed("sqlite", Path(folder) / "deployment", "", env=env) as deployment:
            time.sleep(2)  # the fold's child has started
            processes = {"server": deployment.server_pid}
            for number, pid in enumerate(sorted(children(deployment.server_pid)), 1):
                processes[f"fold process {number}"] = pid
            before = {name: process_cpu_seconds(pid) for name, pid in processes.items()}
            started = time.monotonic()
            load = run_load(
                deployment.url,
                deployment.secret,
                bodies,
                200,
                rate=rate or None,
                seconds=SECONDS,
            )
            elapsed = time.monotonic() - started
            after = {name: process_cpu_seconds(pid) for name, pid in processes.items()}
            print(
                f"accepted {load.accepted_events_per_second:,.0f} events/s, "
                f"refused {load.refused}, unsent {load.unsent}, request p99 {load.p99_ms} ms"
            )
            for name in processes:
                print(f"{name}: {(after[name] - before[name]) / elapsed:.2f} cores")
            print(f"the fold caught up {wait_for_fold(deployment.url):.2f} s after the load")


if __name__ == "__main__":
    main()
