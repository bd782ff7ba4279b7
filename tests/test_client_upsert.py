"""Client.upsert_profile and AsyncClient.upsert_profile against a real `eventfold serve`:
sent at once, checked locally first, refusals raised."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from bench.processes import wait_for_fold

from eventfold.client import AsyncClient, Client, ClientError, InvalidProfile
from tests.servers import Served, served


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


def profile(server: Served, **person: str) -> Any:
    wait_for_fold(server.url)
    answer = httpx2.get(
        f"{server.url}/api/v0/profiles",
        params=person,
        headers={"Authorization": f"Bearer {server.secret}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_upsert_profile_sets_fields_and_tags_at_once(server: Served) -> None:
    with Client(server.url, server.secret) as client:
        client.upsert_profile(
            email="Ann@Example.com",
            custom={"string": [{"key": "tier", "values": ["gold"]}]},
            add_tags=["vip", "beta"],
        )
        client.upsert_profile(email="ann@example.com", remove_tags=["beta"])
        ann = profile(server, email="ann@example.com")
        assert ann["tags"] == ["vip"]
        assert ann["custom"]["string"] == [{"key": "tier", "values": ["gold"]}]
        assert ann["eventCount"] == 0
        with pytest.raises(InvalidProfile) as invalid:
            client.upsert_profile(custom={"string": []})
        assert [e.path for e in invalid.value.errors] == ["profiles[0]"]
    with (
        Client(server.url, "efsk_revoked_or_never_made") as stranger,
        pytest.raises(ClientError) as refused,
    ):
        stranger.upsert_profile(profile_id="shop-1")
    assert refused.value.status == 401


def test_the_async_client_upserts_the_same_way(server: Served) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, server.secret) as client:
            await client.upsert_profile(phone_number="+359 888 123 456", add_tags=["vip"])
            with pytest.raises(InvalidProfile):
                await client.upsert_profile(email="not-an-email")

    asyncio.run(scenario())
    assert profile(server, phoneNumber="+359888123456")["tags"] == ["vip"]
