"""Scale-out across hosts (bench/cluster): network namespaces as hosts, NATS JetStream
between API nodes and workers, faults under load. The short form of
``python -m bench.cluster``: a NATS node killed and an API node cut off from NATS lose
and duplicate nothing acknowledged; nothing leaves the machine; nothing is left behind.

It needs root and iproute2 (``ip netns``): without them it fails, never skips, since
nothing else shows eventfold across hosts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.cluster import network, runbook
from bench.cluster.deployment import REPOSITORY, missing_requirement
from bench.cluster.topology import API, API_PORT, CLIENT, SUBNET

HARNESS = [sys.executable, "-m", "bench.cluster"]


@pytest.fixture
def cluster_host() -> None:
    """Root, iproute2, nats-server 2.10+ and PostgreSQL's binaries, or a failure."""
    reason = missing_requirement()
    if reason is not None:
        pytest.fail(reason)


@pytest.fixture
def bare_network(cluster_host: None) -> Iterator[network.Network]:
    """The hosts and the switch, with nothing running on them."""
    made = network.Network()
    try:
        made.setup()
        yield made
    finally:
        made.teardown()


def leftovers() -> list[str]:
    """What a run may leave behind: namespaces, the route, processes."""
    found = network.our_namespaces()
    routes = subprocess.run(["ip", "route", "show", str(SUBNET)], capture_output=True, text=True)
    found += [line for line in routes.stdout.splitlines() if line.strip()]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found += [line for line in processes.splitlines() if "eventfold-cluster-" in line]
    return found


def test_deploy_docs_show_each_hosts_command_line_as_the_harness_runs_it() -> None:
    docs = (REPOSITORY / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert runbook.topology() in docs


@pytest.mark.slow
def test_without_root_the_harness_refuses_in_one_line() -> None:
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    command = (as_nobody if os.geteuid() == 0 else []) + HARNESS
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "needs root" in done.stderr


@pytest.mark.slow
def test_with_a_link_down_a_packet_to_a_test_host_fails_at_once(
    bare_network: network.Network,
) -> None:
    # From the machine's own namespace, the range's `unreachable` route answers.
    network.check_fails_at_once(API[0].address, API_PORT, "root namespace")
    # From a host with its link down, there is no route at all: no default to fall to.
    network.link_down(CLIENT)
    probe = textwrap.dedent(f"""
        from bench.cluster import network, runbook
        print(network.check_fails_at_once({API[0].address!r}, {API_PORT}, "client"))
    """)
    done = subprocess.run(
        ["ip", "netns", "exec", CLIENT.namespace, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
    )
    assert done.returncode == 0, done.stderr
    assert "fails at once (ENETUNREACH" in done.stdout
    bare_network.check_no_default_routes()


@pytest.mark.slow
def test_ctrl_c_tears_everything_down(cluster_host: None) -> None:
    with subprocess.Popen(
        [*HARNESS, "--scenarios", "worker-kill"],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as harness:
        assert harness.stdout is not None
        seen = []
        for line in harness.stdout:  # the harness gives up on its own if it cannot start
            seen.append(line)
            if line.startswith("cluster up"):
                break
        assert seen[-1].startswith("cluster up"), "".join(seen)
        harness.send_signal(signal.SIGINT)
        assert harness.wait(timeout=120) == 130, harness.stdout.read()
    assert leftovers() == []
    folder = re.search(r"logs in (\S+)", "".join(seen))
    assert folder is not None
    assert not Path(folder.group(1)).exists()


@pytest.mark.slow
def test_a_killed_nats_node_and_a_cut_off_api_node_lose_nothing(cluster_host: None) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [*HARNESS, "--quick"], capture_output=True, text=True, cwd=REPOSITORY, timeout=170
    )
    print(done.stdout)  # the table, with -s
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| nats-kill |")]
    rows += [line for line in done.stdout.splitlines() if line.startswith("| api-partition |")]
    assert len(rows) == 2, done.stdout
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert int(cells[1].replace(",", "")) > 1_000  # events acknowledged
        assert cells[2:4] == ["0", "0"]  # lost, duplicated
    # The exit status already says it never answered 202 while cut off, and recovered.
    cut_off = re.search(r"api-1 answered \{([^}]*)\} while cut off", done.stdout)
    assert cut_off is not None, done.stdout
    assert "503:" in cut_off.group(1)
    assert "202:" not in cut_off.group(1)
    assert "api-1 answered 202 again" in done.stdout
    assert "fails at once" in done.stdout
    assert leftovers() == []
    assert time.monotonic() - started < 120
