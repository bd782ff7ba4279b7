"""Freshness probe: how long from an event's 202 until the profile API shows it.

Posts one event for a new person every ``interval`` seconds and polls that person's
profile until it appears. Run it beside a load generator to see freshness under load:

    python -m bench.freshness --url http://127.0.0.1:8000 --key efsk_... --seconds 10
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import httpx2

POLL_SECONDS = 0.005


def probe(url: str, secret: str, seconds: float, interval: float = 0.1) -> list[float]:
    """Freshness samples in seconds, one per probe event."""
    headers = {"Authorization": f"Bearer {secret}"}
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx2.Client(base_url=url, headers=headers, timeout=30) as client:
        while time.monotonic() < deadline:
            email = f"probe-{uuid.uuid4().hex[:12]}@freshness.example"
            response = client.post(
                "/api/v0/events", json={"events": [{"action": "probe", "email": email}]}
            )
            if response.status_code != 202:
                time.sleep(interval)
                continue
            accepted = time.monotonic()
            while client.get("/api/v0/profiles", params={"email": email}).status_code != 200:
                time.sleep(POLL_SECONDS)
            samples.append(time.monotonic() - accepted)
            time.sleep(interval)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "count": len(samples),
        "p50": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    result = summary(probe(args.url, args.key, args.seconds))
    print(
        " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
