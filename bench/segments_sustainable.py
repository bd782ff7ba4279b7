"""The sustainable rate (``bench.sustainable``'s search, FULL plan) of a SQLite server
with 0, 50, ... of ``bench.segments``' realistic segments defined and ready before the
load: #16's ratio, as users feel it.

    python -m bench.segments_sustainable [COUNT ...]        # default: 0 50
"""

from __future__ import annotations

import sys
import time
from functools import partial

import httpx2

from bench.deployments import Deployment
from bench.segments import realistic_segments
from bench.sustainable import fresh_search
from bench.user_facing import FULL_USERS


def define_segments(deployment: Deployment, count: int) -> None:
    """Posts ``count`` realistic segments and waits until all are ready."""
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


def main() -> None:
    counts = [int(argument) for argument in sys.argv[1:]] or [0, 50]
    for count in counts:
        found = fresh_search(FULL_USERS.search, prepare=partial(define_segments, count=count))
        print(f"{count} segments: sustainable {found['sustainable_events_per_second']} events/s")


if __name__ == "__main__":
    main()
