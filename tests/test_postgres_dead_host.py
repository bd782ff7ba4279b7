"""A PostgreSQL host that silently stops answering (its packets dropped, as a cut link
or a host gone dark drops them) fails eventfold's waiting read within seconds, not the
kernel's 15 minutes of retransmissions: the fold, /healthz, /readyz and ingest's
backpressure all read through such connections.

Real hosts: network namespaces of ``bench.cluster`` (the database on ``db``, the probe
on ``client``), a PostgreSQL of their own, and the packets between them dropped by
``bench.cluster.network.cut``. Needs root and iproute2; fails without them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.cluster import network
from bench.cluster.deployment import REPOSITORY
from bench.cluster.postgres import postgres_bindir
from bench.cluster.topology import CLIENT, DATABASE

PROBE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bench.cluster import network
    from bench.cluster.postgres import PostgresServer, postgres_bindir
    from bench.cluster.topology import CLIENT, DATABASE
    from eventfold.storage.postgres import connect

    server = PostgresServer(Path(sys.argv[1]), postgres_bindir())
    server.initialise()
    server.start()
    connection = connect(server.url + "/postgres")
    connection.execute("SELECT 1")
    network.cut([CLIENT], [DATABASE])
    started = time.monotonic()
    try:
        connection.execute("SELECT 1")
        print("answered")
    except Exception as error:
        print(f"failed after {time.monotonic() - started:.1f} s: {type(error).__name__}")
""")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder the postgres user can reach (pytest's own are root's alone)."""
    made = Path(tempfile.mkdtemp(prefix="eventfold-cluster-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def two_hosts() -> Iterator[None]:
    reason = network.refusal()
    if reason is None and postgres_bindir() is None:
        reason = "needs PostgreSQL's server binaries (apt-get install postgresql)"
    if reason is None and shutil.which("setpriv") is None:
        reason = "needs setpriv (util-linux) to run PostgreSQL as its own user"
    if reason is not None:
        pytest.fail(reason)
    made = network.Network((CLIENT, DATABASE))
    try:
        made.setup()
        yield
    finally:
        made.teardown()


@pytest.mark.slow
def test_a_read_from_a_database_host_gone_silent_fails_within_seconds(
    two_hosts: None, folder: Path
) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", CLIENT.namespace, sys.executable, "-c", PROBE, str(folder)],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=180,  # the kernel alone would wait about 15 minutes
    )
    assert done.returncode == 0, done.stderr
    outcome = done.stdout.strip().splitlines()[-1]
    assert outcome.startswith("failed after "), outcome
    seconds = float(outcome.split()[2])
    assert 10 <= seconds <= 30, outcome  # tcp_user_timeout is 15 s
