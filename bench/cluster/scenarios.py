"""The faults, each injected into the running cluster under load and then undone.

``inject`` does the harm and returns a line saying what it did, and the function that
undoes it; between the two the harness holds the fault for ``hold`` seconds.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from bench.cluster import network
from bench.cluster.deployment import SLOW_LINK_MS, Deployment
from bench.cluster.topology import API, NATS

Heal = Callable[[], None]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Deployment], tuple[str, Heal]]
    hold: float  # seconds between inject and heal
    cut_off_api: int | None = None  # an API node that must answer 503, never 202, meanwhile


def _kill_nats(cluster: Deployment) -> tuple[str, Heal]:
    victim = cluster.nats[cluster.stream_leader()]
    victim.kill()
    return f"kill -9 {victim.name} (the stream's leader), restart it", victim.start


def _partition_nats(cluster: Deployment) -> tuple[str, Heal]:
    victim = NATS[cluster.stream_leader()]
    network.link_down(victim)
    what = f"{victim.name} (the stream's leader) cut off from the other two: link down, up"
    return what, lambda: network.link_up(victim)


def _partition_api(cluster: Deployment) -> tuple[str, Heal]:
    network.cut([API[0]], NATS)
    what = f"{API[0].name} cut off from the 3 NATS nodes (its clients still reach it), healed"
    return what, lambda: network.uncut([API[0]], NATS)


def _kill_worker(cluster: Deployment) -> tuple[str, Heal]:
    victim = cluster.workers[0]
    victim.kill()
    return f"kill -9 {victim.name}, restart it", victim.start


def _slow_link(cluster: Deployment) -> tuple[str, Heal]:
    cluster.wan.signal(signal.SIGUSR1)
    what = f"{SLOW_LINK_MS} ms added each way between {API[1].name} and the NATS cluster"
    return what, lambda: cluster.wan.signal(signal.SIGUSR2)


def _restart_postgres(cluster: Deployment) -> tuple[str, Heal]:
    cluster.postgres.stop()
    return "PostgreSQL stopped (fast shutdown), started again", cluster.postgres.start


def _nothing(cluster: Deployment) -> tuple[str, Heal]:
    return "no fault: the load alone, for comparison", lambda: None


FAULTS = {
    fault.name: fault
    for fault in (
        Fault("nats-kill", _kill_nats, hold=10),
        Fault("nats-partition", _partition_nats, hold=15),
        Fault("api-partition", _partition_api, hold=15, cut_off_api=0),
        Fault("worker-kill", _kill_worker, hold=15),
        Fault("slow-link", _slow_link, hold=20),
        Fault("postgres-restart", _restart_postgres, hold=5),
    )
}
QUICK = ("nats-kill", "api-partition")
BASELINE = Fault("baseline", _nothing, hold=15)  # not in a default run
