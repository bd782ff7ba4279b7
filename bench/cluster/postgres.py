"""The cluster's PostgreSQL: a server of its own on the ``db`` host, made with initdb in
the run's folder, so that restarting it under load disturbs nothing else on the machine
and nothing of the machine's server configuration changes."""

from __future__ import annotations

import glob
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from bench.cluster.services import Service
from bench.cluster.topology import DATABASE, POSTGRES_PORT, SUBNET, postgres_server

USER = "postgres"


def postgres_bindir() -> str | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if found:
        return str(Path(found[-1]).parent)
    on_path = shutil.which("postgres")
    return str(Path(on_path).parent) if on_path else None


class PostgresServer:
    """``postgres -D <folder>/pgdata`` on the db host, listening on its address only."""

    def __init__(self, folder: Path, bindir: str) -> None:
        self.data = folder / "pgdata"
        self.sockets = folder / "pgsocket"
        self.url = postgres_server()
        self._bindir = Path(bindir)
        settings = {
            "listen_addresses": DATABASE.address,
            "port": str(POSTGRES_PORT),
            "unix_socket_directories": str(self.sockets),
            "max_connections": "100",
            "shared_buffers": "128MB",
            # Durable as a production server is (these are the defaults, said aloud).
            "fsync": "on",
            "synchronous_commit": "on",
        }
        options = [part for key, value in settings.items() for part in ("-c", f"{key}={value}")]
        self.service = Service(
            "postgres",
            DATABASE,
            [str(self._bindir / "postgres"), "-D", str(self.data), *options],
            folder / "postgres.log",
            user=USER,
        )

    def initialise(self) -> None:
        """initdb, with trust for the cluster's range (and nothing else over TCP)."""
        for path in (self.data, self.sockets):
            path.mkdir(parents=True)
            shutil.chown(path, USER, USER)
        subprocess.run(
            [
                "setpriv",
                f"--reuid={USER}",
                f"--regid={USER}",
                "--init-groups",
                str(self._bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write(f"host all all {SUBNET} trust\n")

    def start(self, timeout: float = 60) -> None:
        self.service.start()
        self.wait_until_ready(timeout)

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.service.check_alive()
            try:
                psycopg.connect(f"{self.url}/postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start; see {self.service.log}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (what ``pg_ctl stop`` and ``pg_ctlcluster restart`` do):
        sessions are ended, their transactions rolled back, a checkpoint written."""
        self.service.stop(signal.SIGINT, timeout=60)
