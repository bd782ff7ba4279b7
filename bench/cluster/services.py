"""A process on one of the cluster's hosts: started inside its network namespace
(``ip netns exec``, which execs the command, so the process id is the command's own),
killed with SIGKILL or stopped with a signal, its output in a log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster.topology import Host


@dataclass
class Service:
    name: str
    host: Host
    command: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (PostgreSQL refuses root)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None, f"{self.name} runs already"
        command = ["ip", "netns", "exec", self.host.namespace]
        if self.user is not None:
            command += ["setpriv", f"--reuid={self.user}", f"--regid={self.user}"]
            command += ["--init-groups"]
        with self.log.open("ab") as output:  # the child keeps its own copy open
            self.process = subprocess.Popen(
                command + self.command,
                env=child_environment(self.env),
                stdout=output,
                stderr=subprocess.STDOUT,
                # Not in the harness's process group: Ctrl+C reaches the harness only,
                # which then stops everything in order.
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def signal(self, sig: int) -> None:
        assert self.process is not None, f"{self.name} does not run"
        self.process.send_signal(sig)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} on {self.host.name} exited with {self.process.returncode}; "
                f"see {self.log}"
            )


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without EVENTFOLD_* settings (each service gets its
    own, as its host would), plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFOLD_")}
    return {**inherited, **extra}


def wait_until_listening(address: str, port: int, timeout: float, service: Service) -> None:
    """Waits until ``address:port`` takes connections; fails early if the service died."""
    deadline = time.monotonic() + timeout
    while True:
        service.check_alive()
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{service.name} does not listen on {address}:{port}; see {service.log}"
                ) from None
            time.sleep(0.1)
