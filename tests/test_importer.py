"""`eventfold import`: NDJSON, JSON and CSV files in batches, rejects written with their
reasons, and a re-run that duplicates nothing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from bench.batches import realistic_event
from bench.processes import read_all_events, wait_for_fold

from tests.conftest import auth
from tests.servers import Served, served

EVENTS = 100_000
BAD_LINES = {
    17: "{not json",
    5_000: json.dumps({"action": "x", "email": "nope"}),
    99_999: json.dumps(["not", "an", "object"]),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


def stored(server: Served) -> int:
    """The events listed once the fold has made their rows."""
    wait_for_fold(server.url)
    return len(read_all_events(server.url, server.secret))


def run_import(server: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eventfold",
            "import",
            *args,
            "--url",
            server.url,
            "--key",
            server.secret,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_100000_event_file_is_imported_once_even_when_run_twice(
    server: Served, tmp_path: Path
) -> None:
    rng = random.Random(3)
    path = tmp_path / "history.ndjson"
    with path.open("w") as out:
        for number in range(1, EVENTS + 1):
            out.write(BAD_LINES.get(number, json.dumps(realistic_event(rng))) + "\n")
    first = run_import(server, str(path))
    assert first.returncode == 0, first.stderr
    print(first.stdout)
    good = EVENTS - len(BAD_LINES)
    assert f"sent {good} events" in first.stdout
    assert "rejected 3" in first.stdout
    rejects = [
        json.loads(line)
        for line in (tmp_path / "history.ndjson.rejects.ndjson").read_text().splitlines()
    ]
    assert [r["line"] for r in rejects] == sorted(BAD_LINES)
    assert "not valid JSON" in rejects[0]["message"]
    assert rejects[1]["errors"][0]["path"] == "email"
    assert stored(server) == good

    again = run_import(server, str(path))  # as after an interruption: resume from the top
    assert again.returncode == 0, again.stderr
    assert stored(server) == good


def test_identical_batches_at_different_lines_are_both_stored(
    server: Served, tmp_path: Path
) -> None:
    path = tmp_path / "repeats.ndjson"
    path.write_text((json.dumps({"action": "view", "email": "a@b.co"}) + "\n") * 20)
    result = run_import(server, str(path), "--batch-size", "5")
    assert result.returncode == 0, result.stderr
    assert stored(server) == 20


def test_json_and_csv_files_are_imported(server: Served, tmp_path: Path) -> None:
    document = tmp_path / "events.json"
    document.write_text(
        json.dumps(
            {
                "events": [
                    {"action": "view", "email": "a@b.co"},
                    {"action": "buy", "phoneNumber": "+359888"},
                ]
            }
        )
    )
    table = tmp_path / "events.csv"
    table.write_text(
        "action,email,phoneNumber,timestamp,tags,products,custom.string.color,"
        "custom.numeric.size,channel\n"
        "search,c@d.co,,2024-05-01T10:00:00Z,vip;new,1;2,red;blue,42,web\n"
        "purchase,,+3591234,,,,,,\n"
        "broken,,,,,,,,\n"
    )
    assert run_import(server, str(document)).returncode == 0
    result = run_import(server, str(table))
    assert result.returncode == 0, result.stderr
    assert "sent 2 events" in result.stdout
    assert "rejected 1" in result.stdout
    with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as http:
        events = http.get("/api/v0/events", params={"email": "c@d.co"}).json()["events"]
    [search] = events
    assert search["tags"] == ["vip", "new"]
    assert search["products"] == [{"id": "1"}, {"id": "2"}]
    assert search["custom"] == {
        "string": [{"key": "color", "values": ["red", "blue"]}],
        "numeric": [{"key": "size", "values": [42.0]}],
    }
    assert search["channel"] == "web"
    assert stored(server) == 4


def test_in_a_terminal_the_import_shows_one_progress_bar_and_no_log_lines(
    server: Served, tmp_path: Path
) -> None:
    import os
    import pty
    import select
    import time

    rng = random.Random(3)
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(json.dumps(realistic_event(rng, people=50)) for _ in range(5_000)))
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the importer, with the pseudo-terminal as its screen
        os.execvp(  # noqa: S606 - the importer itself, argument by argument
            sys.executable,
            [
                sys.executable,
                "-m",
                "eventfold",
                "import",
                str(source),
                "--batch-size",
                "100",
                "--url",
                server.url,
                "--key",
                server.secret,
            ],
        )
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    text = screen.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "sent 5000 events" in text
    # 50 batches went out; not one log line of the HTTP client (or anything else) between
    # the redraws of the bar.
    assert "HTTP Request" not in text
    assert "INFO" not in text
    assert stored(server) == 5_000
