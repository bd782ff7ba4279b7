"""The cluster's topology as a user would type it, host by host: the very command lines
and settings the harness starts (``python -m bench.cluster --print-topology``).
docs/deploy.md shows this text, and a test keeps the two the same."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench.cluster.deployment import Deployment
from bench.cluster.postgres import PostgresServer
from bench.cluster.services import Service
from bench.cluster.topology import SUBNET
from bench.nats_cluster import CONFIG as NATS_CONFIG

FOLDER = Path("/var/lib/eventfold")  # where each host keeps its data, in the text
WIDTH = 90


def topology() -> str:
    postgres = PostgresServer(FOLDER, "/usr/lib/postgresql/15/bin")
    cluster = Deployment(FOLDER, f"{postgres.url}/eventfold", "nats-server", postgres)
    blocks = [_block(service) for service in cluster.nats]
    blocks.append(
        _block(postgres.service)
        + "\n# as the postgres user, after initdb -D /var/lib/eventfold/pgdata"
        + f"\n# and in its pg_hba.conf: host all all {SUBNET} trust"
        + "\n# (with a password, scram-sha-256, outside a test), then: createdb eventfold"
    )
    blocks.append(
        "# once, from any host that reaches the database:\n"
        f"eventfold migrate --database {cluster.database_url}\n"
        f"eventfold keys create --account shop --database {cluster.database_url}"
    )
    blocks += [_block(service) for service in (*cluster.api, *cluster.workers)]
    return "\n\n".join(blocks)


def _block(service: Service) -> str:
    lines = [f"# {service.host.name} ({service.host.address})"]
    lines += [f"{name}={shlex.quote(value)} \\" for name, value in service.env.items()]
    words = [_plain(word) for word in _command(service)]
    if len(" ".join(words)) <= WIDTH:
        lines.append(" ".join(words))
        return "\n".join(lines)
    # One option a line: "-c name=value", "--log URL".
    groups: list[list[str]] = [[]]
    for word in words:
        if word.startswith("-") and groups[-1] and groups[-1][-1] != "-c":
            groups.append([])
        groups[-1].append(word)
    lines.append(" \\\n  ".join(" ".join(group) for group in groups))
    return "\n".join(lines)


def _command(service: Service) -> list[str]:
    if service.command[:3] == [sys.executable, "-m", "eventfold"]:
        return ["eventfold", *service.command[3:]]
    return service.command


def _plain(word: str) -> str:
    """Paths of this machine as they would be named on a host of its own."""
    if word == str(NATS_CONFIG):
        return "nats-cluster.conf"
    if word.endswith("/bin/postgres"):
        return "postgres"
    return shlex.quote(word)
