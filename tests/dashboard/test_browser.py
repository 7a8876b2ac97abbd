"""The dashboard in a real browser against a real ``asyncfl serve`` with SDK devices.

Sign-in, the overview, a task page that follows training live (over its stream), pause
turning devices away, the tier table, a model download; no console error and no failed
request. The screenshots in the README come from here (``ASYNCFL_SCREENSHOT_DIR=docs``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import onnx
import pytest
from playwright.async_api import Browser, Page

from client_sdk import (
    ArrayDataSource,
    Client,
    ClientOptions,
    Credentials,
    EligibilityPolicy,
    NoSlot,
)
from server.modeling.datasets import load_dataset
from server.process import ServerProcess
from tests.conftest import ServerProcessFactory
from tests.dashboard.browser import chromium, watched_page
from tests.sdk.support import QUICK_RETRY
from tests.server.fleet import create_task

TIERS = ("low", "low", "high", "high")
TASK = {"federated_eval_fraction": 1.0, "eval_every": 1}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


def _digits(i: int, n: int = 150) -> ArrayDataSource:
    x, y, _, _ = load_dataset("digits")
    return ArrayDataSource(x[i * n : (i + 1) * n], y[i * n : (i + 1) * n])


def _client(server: ServerProcess, root: Path, i: int, tier: str) -> Client:
    return Client(
        server.url,
        "t1",
        Credentials(enrollment_key=server.enrollment_key, device_info={"os": "test"}),
        _digits(i),
        root / f"device-{i}",
        policy=EligibilityPolicy.always(),
        options=ClientOptions(
            retry=QUICK_RETRY,
            upload_margin_s=1.0,
            device_tier=tier,
            round_interval_s=0.2,
            max_error_backoff_s=1.0,
        ),
    )


async def _points(page: Page, chart: str) -> int:
    return int(await page.get_attribute(f"#{chart}", "data-points") or 0)


async def _wait(page: Page, expression: str, arg: object = None, timeout_s: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true (the page's CSP forbids the eval
    that ``wait_for_function`` needs)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await page.evaluate(expression, arg):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout_s}s: {expression}")
        await asyncio.sleep(0.1)


async def _sign_in(page: Page, server: ServerProcess, token: str) -> None:
    await page.goto(f"{server.url}/dashboard")
    await page.wait_for_selector("#signin:not([hidden])")
    await page.fill("#token", token)
    await page.click("#signin-form button[type=submit]")


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ASYNCFL_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_missing_or_wrong_token_gets_the_sign_in_page_and_never_data(
    start_server: ServerProcessFactory, browser: Browser
) -> None:
    server = start_server()
    await create_task(server, "secret-task")
    watched = await watched_page(browser)
    page = watched.page

    await page.goto(f"{server.url}/dashboard#/tasks/secret-task")
    await page.wait_for_selector("#signin:not([hidden])")
    no_token_statuses = list(watched.admin_statuses)
    await _sign_in(page, server, "not-the-token")
    await _wait(page, "document.getElementById('signin-error').textContent !== ''")

    assert no_token_statuses == []  # no token: not even a request for data
    assert watched.admin_statuses == [401]
    assert await page.is_hidden("#overview") and await page.is_hidden("#task")
    assert "secret-task" not in await page.content()
    assert "not-the-token" not in page.url
    assert await page.evaluate("sessionStorage.length") == 0


async def test_the_dashboard_follows_a_fleet_training_a_task(
    start_server: ServerProcessFactory, browser: Browser, tmp_path: Path
) -> None:
    server = start_server()
    await create_task(server, **TASK)
    clients = [_client(server, tmp_path, i, tier) for i, tier in enumerate(TIERS)]
    stop = asyncio.Event()
    fleet = [asyncio.create_task(c.run_forever(stop)) for c in clients]
    watched = await watched_page(browser)
    page = watched.page
    shots = _screenshots(tmp_path)
    try:
        await _sign_in(page, server, server.admin_token)
        await page.wait_for_selector("#tasks tbody tr[data-task='t1']")
        await _wait(
            page,
            "document.querySelector('#tasks tr[data-task=t1] td:nth-child(5)').textContent !== '0'",
        )
        overview_row = await page.inner_text("#tasks tr[data-task='t1']")
        await page.screenshot(path=str(shots / "dashboard-overview.png"))

        await page.click("#tasks a[href='#/tasks/t1']")
        await page.wait_for_selector("#task:not([hidden])")
        await _wait(page, "+document.getElementById('chart-accuracy').dataset.points > 0")
        first = await _points(page, "chart-accuracy")
        await _wait(
            page, "(n) => +document.getElementById('chart-accuracy').dataset.points > n", first + 2
        )
        grown = await _points(page, "chart-accuracy")
        transport = await page.get_attribute("#task", "data-transport")
        await _wait(page, "document.querySelectorAll('#tiers tbody tr').length >= 2")
        await _wait(
            page,
            "document.querySelector('#tiers tr[data-tier=low] td:nth-child(7)').textContent"
            " !== '-'",
        )
        tiers = {
            row: await page.inner_text(f"#tiers tr[data-tier='{row}']") for row in ("low", "high")
        }
        await _wait(page, "+document.getElementById('chart-gap').dataset.points > 0")
        await page.screenshot(path=str(shots / "dashboard-task.png"), full_page=True)

        await page.click("#pause")
        await _wait(page, "document.getElementById('task-state').textContent === 'paused'")
        newcomer = _client(server, tmp_path, 9, "mid")
        turned_away = await newcomer.run_once()
        await newcomer.close()
        await _wait(
            page, "document.getElementById('c-checkins').textContent.split(' / ')[1] !== '0'"
        )
        checkins_card = await page.inner_text("#c-checkins")
        await page.click("#resume")
        await _wait(page, "document.getElementById('task-state').textContent === 'running'")

        async with page.expect_download() as download_info:
            await page.click("#download")
        download = await download_info.value
        model = onnx.load_from_string(
            await asyncio.to_thread(Path(await download.path()).read_bytes)
        )
        problems = watched.problems()
    finally:
        stop.set()
        await asyncio.gather(*fleet, return_exceptions=True)
        for client in clients:
            await client.close()
        await page.context.close()

    assert "logreg" in overview_row and "async" in overview_row and "running" in overview_row
    assert grown > first  # the chart gained points as versions committed
    assert transport == "stream"  # pushed over server-sent events, not polled
    assert all(tiers[t].split()[0] == t and int(tiers[t].split()[1]) == 2 for t in tiers)
    assert isinstance(turned_away, NoSlot) and turned_away.reason == "task_paused"
    assert int(checkins_card.split(" / ")[1].replace(",", "")) >= 1
    assert download.suggested_filename.startswith("t1-v") and len(model.graph.node) > 0
    assert problems == []
