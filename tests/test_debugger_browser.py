"""The debugger page in a real headless Chromium (Debian's, never a downloaded one):
enter a key, watch events another client posts appear and fold, look up a profile."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import auth
from tests.receivers import Answer, receiving
from tests.servers import Served, served

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


@pytest.mark.slow
def test_debugger_shows_live_events_and_looks_up_profiles(chromium: str, server: Served) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{server.url}/debugger")
        page.fill("#key", server.secret)
        page.click("#connect")
        expect(page.locator("#status")).to_contain_text("connected", timeout=10_000)

        with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as other_client:
            events = [
                {"action": "search", "email": "live@debug.example", "products": [{"id": "7"}]},
                {"action": "purchase", "phoneNumber": "+359888000111"},
            ]
            assert (
                other_client.post(
                    "/api/v0/events", content=json.dumps({"events": events})
                ).status_code
                == 202
            )
            assert (
                other_client.post(
                    "/api/v0/events",
                    content=json.dumps({"events": [{"action": "oops", "email": "not-an-email"}]}),
                ).status_code
                == 400
            )

        accepted = page.locator("li.event.accepted")
        expect(accepted).to_have_count(2, timeout=10_000)
        expect(accepted.first).to_contain_text("purchase")  # newest first
        expect(page.locator("li.event.rejected")).to_contain_text("not-an-email")
        links = page.locator("a.profile-link")
        expect(links).to_have_count(2, timeout=10_000)  # both folded
        expect(page.locator("#rate")).not_to_have_text("0.0 events/s", timeout=5_000)

        page.locator("li.event.accepted", has_text="search").locator("a.profile-link").click()
        expect(page.locator("#profile")).to_contain_text('"eventCount": 1', timeout=5_000)
        expect(page.locator("#profile")).to_contain_text("live@debug.example")

        page.select_option("#kind", "phoneNumber")
        page.fill("#search", "+359 888 000 111")
        page.click("#lookup")
        expect(page.locator("#profile")).to_contain_text("+359888000111")

        page.click("#pause")
        with httpx2.Client(base_url=server.url, headers=auth(server.secret)) as other_client:
            other_client.post(
                "/api/v0/events",
                content=json.dumps(
                    {"events": [{"action": "while-paused", "email": "live@debug.example"}]}
                ),
            )
        expect(page.locator("#pause")).to_contain_text("1 waiting", timeout=10_000)
        expect(accepted).to_have_count(2)
        page.click("#pause")
        expect(accepted).to_have_count(3)

        assert server.secret not in page.url
        assert server.secret not in page.content()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "debugger.png"), full_page=True)
        browser.close()
    assert server.secret not in "".join(server.output)


@pytest.mark.slow
def test_debugger_shows_webhook_deliveries_with_their_attempts(
    chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    env = {"EVENTFOLD_WEBHOOKS_ALLOW_PRIVATE": "true", "EVENTFOLD_WEBHOOK_RETRY_SECONDS": "0,0.5"}
    with (
        receiving(lambda index, request: Answer(500 if index == 0 else 200)) as receiver,
        served(tmp_path, env) as server,
        httpx2.Client(base_url=server.url, headers=auth(server.secret)) as api,
        sync_playwright() as playwright,
    ):
        webhook = {"url": receiver.url, "types": ["event.matched"]}
        assert api.post("/api/v0/webhooks", content=json.dumps(webhook)).status_code == 201
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server.url}/debugger")
        page.fill("#key", server.secret)
        page.click("#connect")
        expect(page.locator("#deliveries")).to_contain_text("No messages yet", timeout=10_000)
        batch = {"events": [{"action": "purchase", "email": "hook@debug.example"}]}
        assert api.post("/api/v0/events", content=json.dumps(batch)).status_code == 202
        [request] = receiver.wait_for(2)[1:]
        row = page.locator("tr.delivery")
        expect(row).to_have_count(1, timeout=10_000)
        expect(row).to_contain_text("delivered", timeout=10_000)
        expect(row).to_contain_text(request.headers["webhook-id"])
        expect(row).to_contain_text(" 500 (")
        expect(row).to_contain_text(" 200 (")
        assert server.secret not in page.content()
        browser.close()


@pytest.mark.slow
def test_reference_and_debugger_pages_render_with_nothing_from_outside(
    chromium: str, server: Served
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        page.goto(f"{server.url}/docs")
        operations = page.locator("details.operation")
        expect(operations.first).to_be_visible(timeout=10_000)
        assert operations.count() >= 8
        expect(page.locator("summary", has_text="/api/v0/events").first).to_be_visible()
        page.locator("summary", has_text="Store a batch").click()
        expect(page.locator("details.operation[open]")).to_contain_text("Idempotency-Key")
        expect(page.locator("details.schema", has_text="Event").first).to_be_visible()
        page.goto(f"{server.url}/debugger")
        expect(page.locator("#connect")).to_be_visible()
        browser.close()
    assert fetched
    assert all(url.startswith(server.url) for url in fetched), fetched
