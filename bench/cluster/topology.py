"""The hosts of the cluster the harness builds: a name, a network namespace, an address.

One private /24 joins them through a bridge in a namespace of its own (the "switch");
none of them has a default route, and the machine's own namespace gets an
``unreachable`` route for the whole range, so no packet for a test host can leave the
machine whatever goes down.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

SUBNET = ipaddress.ip_network("10.231.0.0/24")
NAMESPACE_PREFIX = "efc-"
SWITCH = NAMESPACE_PREFIX + "switch"
BRIDGE = "br0"
INTERFACE = "eth0"  # each host's one link, to the switch

NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222
API_PORT = 8000
POSTGRES_PORT = 5432
# The slow link: the WAN host forwards these ports to nats-1..3's client port.
WAN_PORTS = (4222, 4223, 4224)


@dataclass(frozen=True)
class Host:
    name: str
    offset: int  # its address within SUBNET

    @property
    def address(self) -> str:
        return str(SUBNET[self.offset])

    @property
    def namespace(self) -> str:
        return NAMESPACE_PREFIX + self.name

    @property
    def switch_port(self) -> str:
        """The veth end on the switch's side (at most 15 characters)."""
        return f"v-{self.name}"


CLIENT = Host("client", 2)  # the load generator, the probes and the harness's checks
DATABASE = Host("db", 5)
NATS = (Host("nats-1", 11), Host("nats-2", 12), Host("nats-3", 13))
API = (Host("api-1", 21), Host("api-2", 22))
WORKERS = (Host("worker-1", 31), Host("worker-2", 32))
WAN = Host("wan", 41)  # api-2's only way to the NATS cluster: a link of adjustable delay
HOSTS = (CLIENT, DATABASE, *NATS, *API, *WORKERS, WAN)


def nats_url(direct: bool = True) -> str:
    """What ``--log`` takes: the three nodes, or the WAN host's ports that lead to them."""
    if direct:
        return "nats://" + ",".join(f"{node.address}:{NATS_CLIENT_PORT}" for node in NATS)
    return "nats://" + ",".join(f"{WAN.address}:{port}" for port in WAN_PORTS)


def postgres_server() -> str:
    return f"postgresql://postgres@{DATABASE.address}:{POSTGRES_PORT}"


def api_url(host: Host) -> str:
    return f"http://{host.address}:{API_PORT}"
