"""End to end: ``eventfold serve`` as a real process, spoken to over TCP."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from eventfold.domain.keys import hash_secret
from eventfold.storage.sqlite import SqliteStorage
from tests.conftest import auth, seed_batch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_first_run_prints_a_key_and_a_curl_command_that_works(tmp_path: Path) -> None:
    assert shutil.which("curl"), ".ci/run installs curl"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "eventfold", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = read_until(server, "listening on")
        secret = re.search(r"^\s+(efsk_\S+)$", banner, re.MULTILINE)
        assert secret, banner
        curl = banner[banner.index("curl ") : banner.index("listening on")].strip()
        assert secret.group(1) in curl
        wait_until_serving(port)
        result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, check=True)
        assert "202 Accepted" in result.stdout
        assert result.stdout.rstrip().endswith("{}")
        response = httpx2.post(
            f"http://127.0.0.1:{port}/api/v0/events",
            content=json.dumps(seed_batch()),
            headers=auth(secret.group(1)),
        )
        assert response.status_code == 202
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
        assert server.stdout is not None
        server.stdout.close()
    storage = SqliteStorage(tmp_path / "eventfold.db")
    principal = storage.find_key(hash_secret(secret.group(1)))
    assert principal is not None
    assert principal.account_name == "default"
    assert storage.count_events(principal.account_id) == 4
    storage.close()


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


def wait_until_serving(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")
