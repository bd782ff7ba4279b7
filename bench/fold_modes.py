"""The sustainable rate (``bench.sustainable``'s search, FULL plan) of one mode with the
server's fold on a thread and in its child process, one after the other, each on a
fresh deployment.

    python -m bench.fold_modes sqlite|postgres [POSTGRES_URL]
"""

from __future__ import annotations

import sys
from typing import cast

from bench.deployments import Mode
from bench.sustainable import fresh_search
from bench.user_facing import FULL_USERS

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def main() -> None:
    mode = cast(Mode, sys.argv[1])
    postgres = sys.argv[2] if len(sys.argv) > 2 else POSTGRES
    for fold_process in (False, True):
        env = {"EVENTFOLD_FOLD_PROCESS": str(fold_process).lower()}
        found = fresh_search(FULL_USERS.search, mode, postgres, env)
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
