"""The receiver example of docs/webhooks.md verifies a real message (and refuses a
forged one), so the documentation cannot drift from what eventfold sends."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from eventfold.settings import Settings
from tests.conftest import post_events
from tests.receivers import receiving
from tests.test_webhook_delivery import subscribe

DOCS = Path(__file__).parent.parent / "docs" / "webhooks.md"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        fold_process=False,
        database_url=database_url,
        fold_lag_cache_seconds=0.001,
        webhooks_allow_private=True,
    )


def test_the_documented_receiver_verifies_a_real_message(
    client: TestClient, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [example] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    with receiving() as receiver:
        webhook = subscribe(client, secret, receiver.url)
        post_events(client, secret, {"action": "purchase", "email": "ana@example.com"})
        [request] = receiver.wait_for(1)
    monkeypatch.setitem(os.environ, "EVENTFOLD_WEBHOOK_SECRET", webhook["secret"])
    module: dict[str, Any] = {"__name__": "receiver_example"}
    exec(compile(example, str(DOCS), "exec"), module)  # noqa: S102 (our own documentation)
    handle = module["handle"]
    forged = request.body.replace(b"purchase", b"purchasf")
    assert handle(forged, request.headers) == 400
    assert handle(request.body, request.headers) == 200
    assert request.headers["webhook-id"] in module["seen"]
    assert handle(request.body, request.headers) == 200  # the same message again
