"""Accounts are walled off from each other on every endpoint; secrets never leak."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from eventfold.clock import now_ms
from eventfold.storage.base import Storage
from tests.conftest import auth, post_events, wait_for_fold


def test_a_key_can_never_read_erase_or_write_another_accounts_data(
    client: TestClient, storage: Storage, secret: str
) -> None:
    intruder = storage.create_key("intruder", now_ms())[1]
    post_events(client, secret, {"action": "buy", "email": "victim@b.co", "profileId": "v1"})
    wait_for_fold(client)
    for person in ({"email": "victim@b.co"}, {"profileId": "v1"}):
        response = client.get("/api/v0/profiles", params=person, headers=auth(intruder))
        assert response.status_code == 404
        page = client.get("/api/v0/events", params=person, headers=auth(intruder)).json()
        assert page["events"] == []
        response = client.delete("/api/v0/profiles", params=person, headers=auth(intruder))
        assert response.status_code == 202
    assert client.get("/api/v0/events", headers=auth(intruder)).json()["events"] == []
    post_events(client, intruder, {"action": "fake", "email": "victim@b.co"})
    wait_for_fold(client)
    victim = client.get("/api/v0/profiles", params={"email": "victim@b.co"}, headers=auth(secret))
    assert victim.json()["eventCount"] == 1
    assert victim.json()["actions"] == {"buy": victim.json()["actions"]["buy"]}


def test_secrets_never_appear_in_answers_or_logs(
    client: TestClient, storage: Storage, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    post_events(client, secret, {"action": "a", "email": "a@b.co"})
    wait_for_fold(client)
    answers = [
        client.get("/api/v0/events", headers=auth(secret)).text,
        client.get("/api/v0/profiles", params={"email": "a@b.co"}, headers=auth(secret)).text,
        client.post("/api/v0/events", content=b"{", headers=auth(secret)).text,
        client.post("/api/v0/events", content=b"{}", headers=auth(secret + "x")).text,
        client.get("/healthz").text,
    ]
    for text in [*answers, caplog.text]:
        assert secret not in text
        assert secret[5:20] not in text
