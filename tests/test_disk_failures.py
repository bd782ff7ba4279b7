"""A full disk during ingest: 503, nothing half-stored, and recovery without a restart.
Uses a real small tmpfs mount (CI runs as root). A read-only remount is refused while
SQLite holds the file open, so read-only errors are not reproduced here; they take the
same path (an SQLite error inside the writer's transaction becomes a 503)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from eventfold.bootstrap import build_services
from eventfold.clock import now_ms
from eventfold.http.app import create_app
from eventfold.settings import Settings
from eventfold.storage import open_storage
from tests.conftest import auth


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_full_disk_answers_503_stores_nothing_and_recovers_without_restart(
    small_disk: Path,
) -> None:
    filler = small_disk / "filler"
    settings = Settings(database_url=f"sqlite:///{small_disk / 'e.db'}", fold_in_server=False)
    storage = open_storage(settings)
    secret = storage.create_key("acme", now_ms())[1]
    batch = json.dumps({"events": [{"action": "a" * 200, "email": "a@b.co"}] * 100})
    accepted = 0
    with TestClient(create_app(build_services(settings, storage))) as client:

        def post() -> int:
            response = client.post("/api/v0/events", content=batch, headers=auth(secret))
            assert response.status_code in (202, 503), response.text
            if response.status_code == 503:
                assert response.headers["retry-after"]
                assert "nothing was stored" in response.json()["message"]
            return response.status_code

        filler.write_bytes(b"\0" * 1_500_000)  # room to free later
        while post() == 202:
            accepted += 1
            assert accepted < 1_000, "the disk never filled"
        assert accepted > 0
        print(f"disk full after {accepted} batches")
        assert storage.count_events(1) == accepted * 100

        filler.unlink()  # free space: ingest resumes by itself
        assert post() == 202
        accepted += 1
    assert storage.count_events(1) == accepted * 100
    storage.close()
