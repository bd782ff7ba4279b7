"""The OpenAPI document describes every endpoint, and schemathesis finds no failures."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from eventfold.http.app import create_app
from tests.servers import served


def test_every_route_is_in_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    app = create_app(client.app.state.services)  # type: ignore[attr-defined]
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    assert paths - {"/openapi.json"} == set(document["paths"])


@pytest.mark.slow
def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis, "schemathesis is a dev dependency"
    with served(tmp_path) as server:
        result = subprocess.run(
            [
                schemathesis,
                "run",
                f"{server.url}/openapi.json",
                "-H",
                f"Authorization: Bearer {server.secret}",
                "--max-examples",
                "40",
                "--seed",
                "1",
                "--checks",
                "all",
                # A schema cannot say "exactly one of email, phoneNumber, profileId" or
                # "an address like name@example.com", so schema-valid requests that break
                # those rules get a (correct) 400.
                "--exclude-checks",
                "positive_data_acceptance",
                # The debugger's stream never ends, by design.
                "--exclude-path",
                "/api/v0/debugger/stream",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path / "schemathesis"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    summary = result.stdout[result.stdout.rfind("SUMMARY") :]
    print(summary)
    assert result.returncode == 0, result.stdout[-6000:]
