"""From an event's 202 to its person's entry in a segment's change feed, over HTTP, with a
paced load beside it: a server on a fresh database with 50 realistic segments and one
probe segment ("bought a probe item"); a probe posts a probe event for a new person every
0.1 s and polls ``GET /api/v0/segments/probe/changes`` until the entry shows.

    python -m bench.segment_feed [--mode sqlite|postgres] [--rate EVENTS_PER_S] [--seconds S]

Issue #16 asks for p99 <= 1 s at half the sustainable rate; pass that rate as --rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2

from bench.deployments import Mode, deployed
from bench.freshness import summary
from bench.paced import run_load, write_bodies
from bench.segments import realistic_segments

BODIES = 100
PROBE_INTERVAL_SECONDS = 0.1
MISSING_AFTER_SECONDS = 30.0


def feed_latency(mode: Mode, rate: float, seconds: float, postgres: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        bodies = write_bodies(Path(folder) / "bodies", BODIES)
        with deployed(mode, Path(folder) / "deployment", postgres) as deployment:
            headers = {"Authorization": f"Bearer {deployment.secret}"}
            with httpx2.Client(base_url=deployment.url, headers=headers, timeout=30) as http:
                probe = {
                    "event": {
                        "action": "purchase",
                        "where": [{"field": "products.id", "op": "in", "value": ["probe-item"]}],
                    }
                }
                for body in [
                    *realistic_segments(50),
                    {"key": "probe", "name": "p", "match": probe},
                ]:
                    answer = http.post("/api/v0/segments", json=body)
                    assert answer.status_code == 201, answer.text
                while any(
                    s["status"] != "ready" for s in http.get("/api/v0/segments").json()["segments"]
                ):
                    time.sleep(0.1)
                latencies: list[float] = []
                missing = 0
                loaded = threading.Thread(
                    target=run_load,
                    args=(deployment.url, deployment.secret, bodies, BODIES),
                    kwargs={"rate": rate, "seconds": seconds},
                )
                loaded.start()
                cursor: str | None = None
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    email = f"probe-{uuid.uuid4().hex[:12]}@feed.example"
                    event = {
                        "action": "purchase",
                        "email": email,
                        "products": [{"id": "probe-item"}],
                    }
                    answer = http.post("/api/v0/events", json={"events": [event]})
                    if answer.status_code != 202:
                        time.sleep(float(answer.headers.get("retry-after", "1")))
                        continue
                    accepted = time.monotonic()
                    seen = False
                    while time.monotonic() - accepted < MISSING_AFTER_SECONDS and not seen:
                        params: dict[str, str | int] = {"limit": 100}
                        if cursor:
                            params["cursor"] = cursor
                        page = http.get("/api/v0/segments/probe/changes", params=params).json()
                        if page["changes"]:
                            seen = True
                        cursor = page.get("nextCursor") or cursor
                        if not seen:
                            time.sleep(0.01)
                    if seen:
                        latencies.append(time.monotonic() - accepted)
                    else:
                        missing += 1
                    time.sleep(PROBE_INTERVAL_SECONDS)
                loaded.join()
    return {
        "mode": mode,
        "paced_events_per_second": rate,
        "segments": 51,
        "feed_latency_seconds": {k: round(v, 3) for k, v in summary(latencies).items()},
        "missing": missing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    print(json.dumps(feed_latency(args.mode, args.rate, args.seconds, args.postgres), indent=1))


if __name__ == "__main__":
    main()
