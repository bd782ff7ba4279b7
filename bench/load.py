"""Driving a server with wrk (a C load generator, so that it is not the bottleneck)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# what wrk posts, plus a count of answers by status (503s are a figure of their own).
LUA = Path(__file__).with_name("post_counted.lua")


@dataclass
class LoadResult:
    connections: int
    seconds: float
    requests: int
    failed: int  # non-2xx answers and socket errors
    p50_ms: float
    p99_ms: float
    max_ms: float
    refused: int = 0  # of the failed: 503 answers (the server asks to retry later)

    @property
    def accepted_requests(self) -> int:
        return self.requests - self.failed

    @property
    def accepted_per_second(self) -> float:
        return self.accepted_requests / self.seconds


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is needed: apt-get install wrk")
    return found


def run_wrk(url: str, body_file: Path, secret: str, connections: int, seconds: float) -> LoadResult:
    """POSTs ``body_file`` to ``url`` over ``connections`` connections for ``seconds``."""
    output = subprocess.run(
        [
            wrk_path(),
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body_file), "SECRET_KEY": secret},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(_find(r"(\d+) requests in", output))
    failed = int(_find(r"Non-2xx or 3xx responses: (\d+)", output, "0"))
    errors = _find(r"Socket errors: (.*)", output, "")
    failed += sum(int(n) for n in re.findall(r"\d+", errors))
    p50, p99, most = (
        float(_find(rf"{name}=(\d+)", output)) / 1000 for name in ("p50", "p99", "max")
    )
    refused = sum(int(n) for n in re.findall(r"^STATUS 503 (\d+)$", output, re.M))
    return LoadResult(
        connections, seconds, requests, min(failed, requests), p50, p99, most, refused
    )


def _find(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text)
    if match:
        return match.group(1)
    if default is None:
        raise RuntimeError(f"wrk's output lacks {pattern!r}:\n{text}")
    return default
