"""A real browser for the explorer's tests: Debian's Chromium, headless, driven by Playwright.

Playwright's own browser download is never used: the tests launch /usr/bin/chromium, which
`make test` installs when it is missing. Without it these tests fail and say how to fix it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright

from bench.explorer_bench import CHROMIUM_ARGS  # the browser flags the explorer bench uses too
from tests.conftest import Stack, Tenant

CHROMIUM = Path(os.environ.get("MILLRACE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("MILLRACE_SCREENSHOTS", "/tmp/millrace-explorer-screenshots"))


def chromium_missing() -> bool:
    return not CHROMIUM.is_file()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if chromium_missing():
        pytest.fail(
            f"the explorer's browser tests need Chromium at {CHROMIUM}: `make test` installs Debian's"
            " chromium package (apt-get install chromium) when it is missing",
            pytrace=False,
        )
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """One page in a fresh browser context (its own session storage), and every request it made."""

    page: Page
    context: BrowserContext
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # console errors (CSP violations among them)

    async def sign_in(self, key: str) -> None:
        await self.page.goto(self.base + "/")
        await self.page.get_by_label("Read key", exact=True).fill(key)
        await self.page.get_by_role("button", name="Sign in").click()

    async def screenshot(self, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path))  # creates the directory
        return path


@pytest.fixture
async def tab(browser: Browser, stack: Stack) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    opened = Tab(page, context, stack.url)

    def record(request: Request) -> None:
        opened.requests.append(request.url)

    page.on("request", record)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"uncaught: {e}"))
    try:
        yield opened
    finally:
        await context.close()


LOGS = [
    # (severity, message, properties)
    ("info", "User signed up", {"service": "auth", "env": "prod", "method": "google"}),
    ("info", "User logged in", {"service": "auth", "env": "prod", "method": "password"}),
    ("warn", "Slow query on orders", {"service": "billing", "env": "prod", "ms": 950}),
    ("error", "Payment failed: card_declined", {"service": "billing", "env": "prod", "orderId": "ord_1"}),
    ("error", "Payment failed: expired_card", {"service": "billing", "env": "staging", "orderId": "ord_2"}),
    ("debug", "cache miss", {"service": "web", "env": "staging"}),
]


async def ingest(stack: Stack, tenant: Tenant, entries: list[tuple[str, str, dict[str, object]]]) -> None:
    body = {"batch": [{"severity": s, "message": m, "properties": p} for s, m, p in entries]}
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    async with stack.session.post(stack.url + "/v1/logs", data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 202, await resp.read()


@pytest.fixture(scope="module")
async def explored(stack: Stack) -> Tenant:
    """A project holding LOGS, ingested through the gateway like any client would."""
    tenant = await stack.tenant(f"explorer-{uuid.uuid4().hex[:8]}")
    await ingest(stack, tenant, LOGS)
    assert await stack.wait_rows(tenant.project, len(LOGS)) == len(LOGS)
    return tenant
