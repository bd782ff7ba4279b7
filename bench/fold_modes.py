"""The sustainable rate (``bench.sustainable``'s search, FULL plan) of one mode with the
server's fold on a thread and in its child process, one after the other, each on a
fresh deployment.

    python -m bench.fold_modes sqlite|postgres [POSTGRES_URL]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from bench.deployments import Mode, deployed
from bench.paced import write_bodies
from bench.sustainable import sustainable_rate
from bench.user_facing import FULL_USERS

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def sustainable(mode: Mode, postgres: str, fold_process: bool) -> dict[str, Any]:
    plan = FULL_USERS.search
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", plan.bodies)
        env = {"EVENTFOLD_FOLD_PROCESS": str(fold_process).lower()}
        with deployed(mode, Path(folder) / "deployment", postgres, env=env) as deployment:
            return sustainable_rate(deployment, bodies, plan)


def main() -> None:
    mode = cast(Mode, sys.argv[1])
    postgres = sys.argv[2] if len(sys.argv) > 2 else POSTGRES
    for fold_process in (False, True):
        found = sustainable(mode, postgres, fold_process)
        where = "in a child process" if fold_process else "on a thread"
        steps = [
            (round(step["target_events_per_second"]), step["freshness"]["p99"], step["passed"])
            for step in found["steps"]
        ]
        print(
            f"{mode}, fold {where}: sustainable {found['sustainable_events_per_second']} "
            f"events/s; closed loop {found['closed_loop']['accepted_events_per_second']}; "
            f"steps (target, freshness p99, passed) {steps}",
            flush=True,
        )


if __name__ == "__main__":
    main()
