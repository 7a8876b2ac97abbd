"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

``.ci/install-browser`` installs the browser; under CI a missing one fails the test,
elsewhere it skips.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright

from tests.services import IN_CI

CHROMIUM = Path(os.environ.get("ASYNCFL_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"no Chromium at {CHROMIUM} (bash .ci/install-browser installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """What a page logged and which of its requests failed (network or HTTP >= 400)."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    admin_statuses: list[int] = field(default_factory=list)

    def problems(self) -> list[str]:
        return self.console_errors + self.failed


async def watched_page(browser: Browser) -> Watched:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(f"console: {message.text}")

    def on_failed(request: Request) -> None:
        watched.failed.append(f"failed: {request.method} {request.url} {request.failure}")

    def on_response(response: Response) -> None:
        if "/admin/" in response.url:
            watched.admin_statuses.append(response.status)
        if response.status >= 400:
            watched.failed.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.console_errors.append(f"page error: {exc}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    return watched
