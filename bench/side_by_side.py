"""The sustainable rate of two or more eventfold trees on SQLite, alternated, each run
on a fresh deployment: how a change moved what users feel, on a machine whose speed
drifts within minutes.

    python -m bench.side_by_side ROUNDS TREE [TREE ...]

Each TREE is a folder holding an eventfold ``src/`` (``git archive COMMIT | tar -x -C
TREE``); the benchmark's own code is this one's. Each run is ``bench.sustainable``'s
search with the FULL plan (a closed loop, then up to 6 paced steps with the freshness
probe), in a process whose ``PYTHONPATH`` puts the tree's ``src`` first, so the server it
starts runs that tree with its defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_ROOT = Path(__file__).resolve().parent.parent
_ONE_RUN = """
from bench.sustainable import fresh_search
from bench.user_facing import FULL_USERS
print(fresh_search(FULL_USERS.search)["sustainable_events_per_second"])
"""


def sustainable(tree: Path) -> str:
    """One search's sustainable events/s on ``tree``."""
    env = {**os.environ, "PYTHONPATH": f"{BENCH_ROOT}:{tree / 'src'}"}
    done = subprocess.run(
        [sys.executable, "-c", _ONE_RUN], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    rounds, trees = int(sys.argv[1]), [Path(argument) for argument in sys.argv[2:]]
    for number in range(1, rounds + 1):
        for tree in trees:
            load = os.getloadavg()[0]
            print(f"round {number} {tree} (load {load:.2f}): {sustainable(tree)}", flush=True)


if __name__ == "__main__":
    main()
