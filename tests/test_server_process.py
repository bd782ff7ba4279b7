"""End to end: ``eventfold serve`` as a real process, spoken to over TCP."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx2

from eventfold.domain.keys import hash_secret
from eventfold.storage.sqlite import SqliteStorage
from tests.conftest import auth, seed_batch
from tests.servers import served


def test_first_run_prints_a_key_and_a_curl_command_that_works(tmp_path: Path) -> None:
    assert shutil.which("curl"), ".ci/run installs curl"
    with served(tmp_path) as server:
        curl = server.banner[server.banner.index("curl ") : server.banner.index("listening on")]
        assert server.secret in curl
        result = subprocess.run(
            ["bash", "-c", curl.strip()], capture_output=True, text=True, check=True
        )
        assert "202 Accepted" in result.stdout
        assert result.stdout.rstrip().endswith("{}")
        response = httpx2.post(
            f"{server.url}/api/v0/events",
            content=json.dumps(seed_batch()),
            headers=auth(server.secret),
        )
        assert response.status_code == 202
    storage = SqliteStorage(tmp_path / "eventfold.db")
    principal = storage.find_key(hash_secret(server.secret))
    assert principal is not None
    assert principal.account_name == "default"
    assert storage.count_events(principal.account_id) == 4
    storage.close()
