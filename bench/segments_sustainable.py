"""The sustainable rate (``bench.sustainable``'s search, FULL plan) of a SQLite server
with 0, 50, ... of ``bench.segments``' realistic segments defined and ready before the
load: #16's ratio, as users feel it.

    python -m bench.segments_sustainable [COUNT ...]        # default: 0 50
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx2

from bench.deployments import deployed
from bench.paced import write_bodies
from bench.segments import realistic_segments
from bench.sustainable import sustainable_rate
from bench.user_facing import FULL_USERS


def with_segments(count: int) -> int | None:
    """The sustainable events/s with ``count`` segments (None: no step passed)."""
    plan = FULL_USERS.search
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", plan.bodies)
        with deployed("sqlite", Path(folder) / "deployment", "") as deployment:
            headers = {"Authorization": f"Bearer {deployment.secret}"}
            url = f"{deployment.url}/api/v0/segments"
            for body in realistic_segments(count):
                answer = httpx2.post(url, json=body, headers=headers)
                assert answer.status_code == 201, answer.text
            while any(
                segment["status"] != "ready"
                for segment in httpx2.get(url, headers=headers).json()["segments"]
            ):
                time.sleep(0.2)
            found: int | None = sustainable_rate(deployment, bodies, plan)[
                "sustainable_events_per_second"
            ]
            return found


def main() -> None:
    counts = [int(argument) for argument in sys.argv[1:]] or [0, 50]
    rates = {count: with_segments(count) for count in counts}
    for count, rate in rates.items():
        print(f"{count} segments: sustainable {rate} events/s")


if __name__ == "__main__":
    main()
