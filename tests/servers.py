"""Running `eventfold serve` as a real process for tests that speak TCP to it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.processes import free_port, wait_until_listening


@dataclass
class Served:
    url: str
    port: int
    secret: str
    banner: str
    process: subprocess.Popen[str]
    database: Path
    output: list[str]  # what the server printed after its banner (its log lines)


def start_server(
    folder: Path, port: int, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eventfold", "serve", "--port", str(port), *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


@contextmanager
def served(
    folder: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[Served]:
    """A server on a fresh ./eventfold.db in ``folder``, with the key it printed."""
    port = free_port()
    process = start_server(folder, port, env, args)
    try:
        banner = read_until(process, "listening on")
        found = re.search(r"^\s+(efsk_\S+)$", banner, re.MULTILINE)
        assert found, banner
        wait_until_listening(port)
        output: list[str] = []
        # Keep reading, or the server blocks once the pipe's buffer is full of log lines.
        threading.Thread(target=_drain, args=(process, output), daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        yield Served(url, port, found.group(1), banner, process, folder / "eventfold.db", output)
    finally:
        stop(process)


def _drain(process: subprocess.Popen[str], into: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        into.append(line)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None and not process.stdout.closed:
        with contextlib.suppress(ValueError):  # the drain thread may be reading it
            process.stdout.close()


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 20) -> str:
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"server never printed {marker!r}: {''.join(seen)}")
