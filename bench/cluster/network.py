"""Network namespaces joined by veth links and a bridge, made with iproute2 (``ip``);
the faults the scenarios inject into them; and the checks that nothing leaves the
machine.

Everything is undone by :meth:`Network.teardown`, also after a partial setup; a run that
was killed before its teardown leaves its namespaces and route to the next run, whose
setup removes them first (under a lock, so never another live run's).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from bench.cluster.topology import (
    BRIDGE,
    HOSTS,
    INTERFACE,
    NAMESPACE_PREFIX,
    SUBNET,
    SWITCH,
    Host,
)

LOCK = Path("/run/eventfold-cluster.lock")
# A MAC address no host has: a neighbour entry pointing there drops packets silently,
# as a cut cable does (no iptables, no tc classifiers on this kernel).
NOWHERE_MAC = "02:00:00:00:00:99"
_UNREACHABLE = ("unreachable", str(SUBNET))


class NetworkError(Exception):
    """The network could not be made or checked; the message says why."""


def refusal() -> str | None:
    """Why the harness cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return (
            "bench.cluster needs root: it makes network namespaces, veth links and routes "
            "(run it as root, e.g. sudo .venv/bin/python -m bench.cluster)"
        )
    if shutil.which("ip") is None:
        return "bench.cluster needs iproute2's `ip` (apt-get install iproute2)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


def ip(*args: str, namespace: str | None = None) -> str:
    """Runs ``ip [-n namespace] args``; its output, or NetworkError with its message."""
    command = ["ip", *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise NetworkError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return done.stdout


def our_namespaces() -> list[str]:
    listed = ip("netns", "list").splitlines()
    names = [line.split()[0] for line in listed if line.strip()]
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


class Network:
    """The switch and one namespace per host; ``setup`` then ``teardown``."""

    def __init__(self, hosts: Sequence[Host] = HOSTS) -> None:
        self.hosts = tuple(hosts)
        self._lock: IO[str] | None = None
        self._route_added = False

    def setup(self) -> None:
        self._take_lock()
        self._remove_leftovers()
        self._check_range_is_free()
        # First of all: from here on a packet for the range can only fail in the
        # machine's own namespace, never take its default route out.
        ip("route", "add", *_UNREACHABLE)
        self._route_added = True
        ip("netns", "add", SWITCH)
        ip("link", "set", "lo", "up", namespace=SWITCH)
        ip("link", "add", BRIDGE, "type", "bridge", namespace=SWITCH)
        ip("link", "set", BRIDGE, "up", namespace=SWITCH)
        for host in self.hosts:
            self._add_host(host)
        self.check_no_default_routes()

    def _add_host(self, host: Host) -> None:
        ns = host.namespace
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", namespace=ns)
        peer = ("peer", "name", INTERFACE, "netns", ns)
        ip("link", "add", host.switch_port, "type", "veth", *peer, namespace=SWITCH)
        ip("link", "set", host.switch_port, "master", BRIDGE, "up", namespace=SWITCH)
        ip("addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", INTERFACE, namespace=ns)
        ip("link", "set", INTERFACE, "up", namespace=ns)

    def teardown(self) -> None:
        """Ends every process in the namespaces, deletes them, then the route; nothing
        when the lock was not ours (another run's namespaces are not ours to end)."""
        if self._lock is None:
            return
        names = our_namespaces()
        end_processes(names)
        for name in sorted(names, key=lambda name: name == SWITCH):  # the switch last
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if self._route_added:
            subprocess.run(["ip", "route", "del", *_UNREACHABLE], capture_output=True)
            self._route_added = False
        self._lock.close()
        self._lock = None

    def _take_lock(self) -> None:
        handle = LOCK.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise NetworkError(
                f"another bench.cluster run holds {LOCK}; wait for it to end"
            ) from None
        self._lock = handle

    def _remove_leftovers(self) -> None:
        """Namespaces and the route of a run that was killed before its teardown (the
        lock says no other run owns them)."""
        leftovers = our_namespaces()
        end_processes(leftovers)
        for name in leftovers:
            ip("netns", "del", name)
        if ip("route", "show", "type", "unreachable", str(SUBNET)).strip():
            ip("route", "del", *_UNREACHABLE)

    def _check_range_is_free(self) -> None:
        for line in ip("-o", "addr", "show").splitlines() + ip("route", "show").splitlines():
            for word in line.split():
                if "." not in word:
                    continue
                try:
                    network = ipaddress.ip_network(word, strict=False)
                except ValueError:
                    continue
                if network.version == 4 and network.prefixlen > 0 and network.overlaps(SUBNET):
                    raise NetworkError(
                        f"this machine already uses {network} ({line.strip()}), which overlaps "
                        f"the harness's range {SUBNET}; change SUBNET in bench/cluster/topology.py"
                    )

    def check_no_default_routes(self) -> None:
        for host in self.hosts:
            for family in ("-4", "-6"):
                found = ip(family, "route", "show", "default", namespace=host.namespace)
                if found.strip():
                    raise NetworkError(f"{host.namespace} has a default route: {found.strip()}")


def end_processes(namespaces: Iterable[str], grace: float = 10.0) -> None:
    """SIGTERM to every process in the namespaces, SIGKILL to those left after ``grace``."""
    pids = [
        int(pid)
        for name in namespaces
        for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True
        ).stdout.split()
    ]
    pids = [pid for pid in pids if pid != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, maybe us, reaps it later).
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][:1] != "Z"
    except FileNotFoundError:
        return False


# --- faults -------------------------------------------------------------------------


def link_down(host: Host) -> None:
    """Cuts the host off from everyone: its only link goes down."""
    ip("link", "set", INTERFACE, "down", namespace=host.namespace)


def link_up(host: Host) -> None:
    ip("link", "set", INTERFACE, "up", namespace=host.namespace)


def cut(side: Sequence[Host], others: Sequence[Host]) -> None:
    """Packets between ``side`` and ``others`` vanish (both ways), as through a broken
    switch: each host's neighbour entry for the other side points to no one. The rest
    of the network still reaches both."""
    for host, peers in _pairs(side, others):
        for peer in peers:
            ip(
                "neigh",
                "replace",
                peer.address,
                "lladdr",
                NOWHERE_MAC,
                "dev",
                INTERFACE,
                "nud",
                "permanent",
                namespace=host.namespace,
            )


def uncut(side: Sequence[Host], others: Sequence[Host]) -> None:
    for host, peers in _pairs(side, others):
        for peer in peers:
            ip("neigh", "del", peer.address, "dev", INTERFACE, namespace=host.namespace)


def _pairs(side: Sequence[Host], others: Sequence[Host]) -> list[tuple[Host, Sequence[Host]]]:
    return [(host, others) for host in side] + [(host, side) for host in others]


def unreachable_from(host: Host, targets: Sequence[Host]) -> None:
    """``host`` cannot open connections to ``targets`` (fails at once): for a host that
    must reach them through another way, whatever addresses they advertise."""
    for target in targets:
        ip("route", "add", "unreachable", f"{target.address}/32", namespace=host.namespace)


# --- containment checks -------------------------------------------------------------


def connect_error(address: str, port: int, timeout: float = 3.0) -> tuple[int | None, float]:
    """Tries a TCP connection from this process's namespace: the errno it failed with
    (None: it connected or timed out) and how long that took."""
    started = time.monotonic()
    with socket.socket() as probe:
        probe.settimeout(timeout)
        try:
            probe.connect((address, port))
        except OSError as error:
            return error.errno, time.monotonic() - started
    return None, time.monotonic() - started


FAILS_AT_ONCE = (errno.ENETUNREACH, errno.EHOSTUNREACH)
AT_ONCE_SECONDS = 0.5


def check_fails_at_once(address: str, port: int, where: str) -> str:
    """Raises NetworkError unless a connection to ``address`` fails at once here; else a
    line that says so."""
    code, seconds = connect_error(address, port)
    if code not in FAILS_AT_ONCE or seconds > AT_ONCE_SECONDS:
        what = "connected or timed out" if code is None else os.strerror(code)
        raise NetworkError(
            f"{where}: a connection to {address}:{port} {what} after {seconds:.2f} s "
            "instead of failing at once; a packet may have left the machine"
        )
    return (
        f"{where}: a connection to {address}:{port} fails at once "
        f"({errno.errorcode[code]} in {seconds * 1000:.2f} ms)"
    )
