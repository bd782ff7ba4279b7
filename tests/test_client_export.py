"""Client.export_profiles and AsyncClient.export_profiles against a real `eventfold
serve`: every profile of the account, lazily, with since, and errors as ClientError."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.processes import wait_for_fold

from eventfold.client import AsyncClient, Client, ClientError
from tests.servers import Served, served


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        with Client(running.url, running.secret) as client:
            for n in range(5):
                client.track("view", email=f"p{n}@b.co", timestamp=f"2024-0{n + 1}-01T00:00:00Z")
            assert client.flush(timeout=30)
        wait_for_fold(running.url)
        yield running


def by_id(server: Served, profile_id: str) -> Any:
    answer = httpx2.get(
        f"{server.url}/api/v0/profiles/{profile_id}",
        headers={"Authorization": f"Bearer {server.secret}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_export_profiles_yields_every_profile_lazily(server: Served) -> None:
    with Client(server.url, server.secret) as client:
        profiles = client.export_profiles()
        assert isinstance(profiles, types.GeneratorType)  # nothing is read before next()
        exported = list(profiles)
        assert sorted(p["emails"][0] for p in exported) == [f"p{n}@b.co" for n in range(5)]
        assert exported == [by_id(server, p["id"]) for p in exported]
        recent = client.export_profiles(since=datetime(2024, 4, 1))  # no zone: UTC
        assert [p["emails"] for p in recent] == [["p3@b.co"], ["p4@b.co"]]
        as_text = client.export_profiles(since="2024-05-01T00:00:00Z")
        assert [p["emails"] for p in as_text] == [["p4@b.co"]]
        with pytest.raises(ClientError) as refused:
            next(client.export_profiles(since="soon"))
        assert refused.value.status == 400
        assert "since" in str(refused.value)
    with Client(server.url, "efsk_not-a-key") as stranger, pytest.raises(ClientError) as error:
        list(stranger.export_profiles())
    assert error.value.status == 401


def test_async_export_profiles_yields_every_profile(server: Served) -> None:
    async def scenario() -> tuple[list[Any], list[Any], int]:
        async with AsyncClient(server.url, server.secret) as client:
            everyone = [p async for p in client.export_profiles()]
            recent = [p async for p in client.export_profiles(since="2024-04-01T00:00:00Z")]
            try:
                async for _ in client.export_profiles(since="soon"):
                    pass
            except ClientError as error:
                return everyone, recent, error.status
        raise AssertionError("a bad since was not refused")

    everyone, recent, status = asyncio.run(scenario())
    assert sorted(p["emails"][0] for p in everyone) == [f"p{n}@b.co" for n in range(5)]
    assert [p["emails"] for p in recent] == [["p3@b.co"], ["p4@b.co"]]
    assert status == 400
