"""The benchmark runs end to end (a tiny load: this checks that it works, not a speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.minimal_server import INVALID_EVENTS, self_check
from bench.processes import fold_cpu_between
from bench.request_path import SKIPPABLE, path_cost


@pytest.mark.slow
def test_benchmark_quick_run_writes_figures(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    chart = tmp_path / "chart.png"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output), "--chart", str(chart)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    rows = figures["sqlite"]["by_batch_size"] + figures["sqlite"]["sweep_100"]
    # Every answer a 202, or a 503 from the server's backpressure (refused, counted
    # apart: on a loaded machine the fold can fall behind even in a one-second run).
    assert all(row["events_per_second"] > 0 for row in rows), rows
    assert all(row["failed"] == row["refused"] for row in rows), rows
    assert figures["sqlite"]["server_peak_rss_mb"] > 0
    # The CPU an accepted event took in the server and in the fold's child process.
    by_size = figures["sqlite"]["by_batch_size"]
    assert all(row["server_cpu_us_per_event"] > 0 for row in by_size), by_size
    assert all((row["fold_cpu_us_per_event"] or 0) > 0 for row in by_size), by_size
    assert figures["ceilings"]["ratio_to_lower_ceiling"] > 0
    assert figures["ceilings"]["minimal_server_events_per_second"] > 0
    assert figures["ceilings"]["accepted_ratio_to_minimal_server"] > 0
    validation = figures["ceilings"]["validation"]
    assert validation["msgspec_typed_contract_us_per_event"] > 0
    assert validation["eventfold_validate_us_per_event"] > 0
    postgres_ceiling = figures["ceilings"]["postgres_in_process_validate_and_store"]
    assert postgres_ceiling["events_per_second"] > 0  # CI has PostgreSQL
    assert postgres_ceiling["postgres_cpu_us_per_event"] > 0  # and runs it on this machine
    assert figures["postgres"]["sweep_100"][0]["events_per_second"] > 0  # CI has PostgreSQL
    assert figures["nats"]["sweep_100"][0]["events_per_second"] > 0  # nats-server in .venv
    closed_loop = figures["sustainable"]["sqlite"]["closed_loop"]
    assert closed_loop["accepted_events_per_second"] > 0
    assert closed_loop["freshness"]["count"] > 0  # the probe ran beside the load
    assert len(figures["sustainable"]["sqlite"]["steps"]) == 1  # and one paced step
    for mode in ("sqlite", "nats"):  # an eventfold worker folded a backlog
        assert figures["fold"][mode][0]["fold_events_per_second"] > 0
        assert figures["fold"][mode][0]["workers_cpu_us_per_event"] > 0
    for backend in ("sqlite", "postgres"):  # webhooks delivered to a local receiver
        webhooks = figures["webhooks"][backend]
        assert webhooks["deliveries"]["deliveries_per_second"] > 0
        assert webhooks["latency_alone"]["p99_ms"] > 0
        assert webhooks["latency_beside_dead_endpoint"]["dead_endpoint_requests"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "eventfold (SQLite) / lower ceiling" in result.stdout
    assert "ceiling (c) minimal server" in result.stdout
    assert "msgspec typed contract" in result.stdout


def test_minimal_server_stores_valid_batches_and_rejects_what_the_contract_rejects(
    tmp_path: Path,
) -> None:
    answers = self_check(tmp_path / "minimal.db")
    assert answers.pop("valid") == (202, "", 1)
    assert set(answers) == {*INVALID_EVENTS, "not JSON"}
    for name, (status, message, stored) in answers.items():
        assert (status, stored) == (400, 1), name  # refused, and nothing more was stored
        assert message, name


@pytest.mark.slow
def test_the_export_benchmark_streams_every_profile_from_a_server_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.export", "--profiles", "3000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.splitlines()[0])
    assert run["exported"] == run["profiles"] == 3000
    assert run["peak_rss_mb"] >= run["idle_rss_mb"] > 0


@pytest.mark.parametrize("skip", [(), ("validation",), ("append",), SKIPPABLE])
def test_request_path_benchmark_measures_every_variant(
    tmp_path: Path, skip: tuple[str, ...]
) -> None:
    # path_cost raises unless every request was answered 202.
    assert path_cost(tmp_path, skip, requests_each=4) > 0


def test_the_fold_cpu_of_a_restarted_fold_process_is_unknown_not_low() -> None:
    # The child that ran at the first reading exited: its CPU since then is lost.
    assert fold_cpu_between({101: 5.0}, {202: 1.0}) is None
    # A child that started meanwhile counts whole; one that ran throughout, its growth.
    assert fold_cpu_between({101: 5.0}, {101: 7.0, 303: 0.5}) == 2.5
