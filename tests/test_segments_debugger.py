"""The debugger page shows segment entries and exits live, in a real headless Chromium."""

from __future__ import annotations

import json

import httpx2
import pytest

from tests.conftest import auth
from tests.servers import Served
from tests.test_debugger_browser import CHROMIUM_FLAGS, chromium, server  # noqa: F401 (fixtures)


@pytest.mark.slow
def test_debugger_shows_segment_entries_and_exits_live(
    chromium: str,  # noqa: F811
    server: Served,  # noqa: F811
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{server.url}/debugger")
        page.fill("#key", server.secret)
        page.click("#connect")
        expect(page.locator("#status")).to_contain_text("connected", timeout=10_000)
        with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as other:
            vip = {"event": {"action": "purchase"}, "count": {"op": "gte", "value": 2}}
            created = other.post(
                "/api/v0/segments", content=json.dumps({"key": "vip", "name": "V", "match": vip})
            )
            assert created.status_code == 201
            purchases = [{"action": "purchase", "email": "seg@debug.example"}] * 2
            posted = other.post("/api/v0/events", content=json.dumps({"events": purchases}))
            assert posted.status_code == 202
            entered = page.locator("li.event.entered")
            expect(entered).to_have_count(1, timeout=10_000)
            expect(entered).to_contain_text("vip — prof_")
            erased = other.delete("/api/v0/profiles", params={"email": "seg@debug.example"})
            assert erased.status_code == 202
        expect(page.locator("li.event.exited")).to_contain_text("vip — prof_", timeout=10_000)
        browser.close()
