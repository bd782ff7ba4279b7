"""`eventfold serve` folds in a child `eventfold worker` process (the default,
``fold_process``): events still become live, a killed child is started again and
reported meanwhile, and the child does not outlive its server, stopped or killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from bench.processes import children

from tests.servers import Served, served


def _is_a_worker(pid: int) -> bool:
    try:
        return b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _fold_child(server: Served) -> int:
    """The server's one `eventfold worker` child, once it runs."""
    found: set[int] = set()

    def one_worker() -> bool:
        nonlocal found
        found = {pid for pid in children(server.process.pid) if _is_a_worker(pid)}
        return len(found) == 1

    _wait_until(one_worker, "the server to start its fold process")
    return found.pop()


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _post(server: Served, email: str) -> None:
    answer = httpx2.post(
        f"{server.url}/api/v0/events",
        json={"events": [{"action": "view", "email": email}]},
        headers={"Authorization": f"Bearer {server.secret}"},
    )
    assert answer.status_code == 202, answer.text


def _see(server: Served, email: str) -> None:
    def live() -> bool:
        found = httpx2.get(
            f"{server.url}/api/v0/profiles",
            params={"email": email},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        return found.status_code == 200

    _wait_until(live, f"{email}'s event to be folded")


def test_the_server_folds_in_a_child_that_is_started_again_when_it_dies(tmp_path: Path) -> None:
    with served(tmp_path) as server:
        child = _fold_child(server)
        _post(server, "first@example.com")
        _see(server, "first@example.com")
        health = httpx2.get(f"{server.url}/healthz").json()
        assert health["fold"] == {"running": True, "failingForSeconds": 0.0, "lastError": None}
        assert health["segments"]["running"] is True

        os.kill(child, signal.SIGKILL)
        _wait_until(
            lambda: httpx2.get(f"{server.url}/healthz").json()["fold"]["lastError"] is not None,
            "the server to report its fold process's exit",
        )
        health = httpx2.get(f"{server.url}/healthz").json()
        assert "exited with code -9; starting it again in 1 s" in health["fold"]["lastError"]
        _post(server, "meanwhile@example.com")  # accepted while no fold runs
        replacement = _fold_child(server)
        assert replacement != child
        _see(server, "meanwhile@example.com")
        assert httpx2.get(f"{server.url}/healthz").json()["fold"]["running"] is True


def _report_folder(pid: int) -> Path:
    """The folder of the fold child's health report, from its command line."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return Path(arguments[arguments.index("--report-health") + 1]).parent


def test_the_fold_process_stops_with_the_server_stopped_or_killed(tmp_path: Path) -> None:
    with served(tmp_path) as server:
        child = _fold_child(server)
        report = _report_folder(child)
        server.process.send_signal(signal.SIGINT)  # as Ctrl+C: an orderly stop
        assert server.process.wait(timeout=30) == 0
        _wait_until(lambda: not _alive(child), "the fold process to stop with the server")
        assert not report.exists()
    (tmp_path / "killed").mkdir()
    with served(tmp_path / "killed") as server:
        child = _fold_child(server)
        report = _report_folder(child)
        _wait_until(lambda: (report / "health").exists(), "the child's first health report")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        _wait_until(lambda: not _alive(child), "the orphaned fold process to stop")
        assert not report.exists()  # removed by the child: the killed server cannot


def test_the_fold_on_a_thread_runs_no_child(tmp_path: Path) -> None:
    with served(tmp_path, env={"EVENTFOLD_FOLD_PROCESS": "false"}) as server:
        _post(server, "thread@example.com")
        _see(server, "thread@example.com")
        assert not any(_is_a_worker(pid) for pid in children(server.process.pid))


def test_the_child_reports_its_loops_failures_and_a_silent_child_shows_as_failing(
    tmp_path: Path,
) -> None:
    with served(tmp_path) as server:
        child = _fold_child(server)
        for n in range(10):
            _post(server, f"p{n}@example.com")
        _see(server, "p9@example.com")
        # Every stored profile becomes unreadable: the child's segment backfill fails (it
        # leaves out one such profile, not all of a step of ten), and must say so here.
        with sqlite3.connect(server.database) as database:
            database.execute("UPDATE profiles SET state = ?", (b"not a state",))
        created = httpx2.post(
            f"{server.url}/api/v0/segments",
            json={"key": "viewers", "name": "Viewers", "match": {"event": {"action": "view"}}},
            headers={"Authorization": f"Bearer {server.secret}"},
        )
        assert created.status_code == 201, created.text

        def segments_error() -> str | None:
            found: str | None = httpx2.get(f"{server.url}/healthz").json()["segments"]["lastError"]
            return found

        _wait_until(lambda: segments_error() is not None, "the child's backfill failure")
        assert (segments_error() or "").startswith("DecodeError: JSON is malformed")
        health = httpx2.get(f"{server.url}/healthz").json()
        assert health["fold"]["lastError"] is None  # the fold itself is fine
        assert health["segments"]["running"] is True

        # A child that stops reporting (here: stopped) shows as failing, and not ready.
        os.kill(child, signal.SIGSTOP)
        try:
            _wait_until(
                lambda: httpx2.get(f"{server.url}/readyz").status_code == 503,
                "the server to notice its fold process went silent",
            )
            fold = httpx2.get(f"{server.url}/healthz").json()["fold"]
            assert "has not reported its loops' health" in fold["lastError"]
        finally:
            os.kill(child, signal.SIGCONT)
        _wait_until(
            lambda: httpx2.get(f"{server.url}/healthz").json()["fold"]["lastError"] is None,
            "the fold's health to come back once the child reports again",
        )
