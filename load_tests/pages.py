"""Open dashboard task pages in headless Chromium and keep them following (load tool).

    ASYNCFL_LOAD_ADMIN_TOKEN=... python -m load_tests.pages --url http://127.0.0.1:8080 \\
        --task load --pages 5 --out pages.json

Each page signs in with the admin token and opens the task's page, which follows the
task as an operator's would (its live stream, or polling where the stream fails). Runs
until ``--seconds`` pass or SIGTERM, then writes what the pages saw (updates applied and
over which transport, console errors, failed requests) to ``--out`` as JSON.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("ASYNCFL_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def open_task_page(
    browser: Browser, url: str, token: str, task: str
) -> tuple[Page, dict[str, Any]]:
    """A signed-in page on ``task``; returns it and its counters (updated live)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    seen: dict[str, Any] = {"live_ok": 0, "errors": [], "failed": []}

    def on_response(response: Any) -> None:
        if "/live?" in response.url and response.status == 200:
            seen["live_ok"] += 1
        if response.status >= 400:
            seen["failed"].append(f"HTTP {response.status} {response.url}")

    page.on("response", on_response)
    page.on("requestfailed", lambda r: seen["failed"].append(f"{r.url} {r.failure}"))
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    await page.goto(f"{url}/dashboard")
    await page.fill("#token", token)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#overview:not([hidden])")
    await page.goto(f"{url}/dashboard#/tasks/{task}")
    return page, seen


async def first_paint_ms(page: Page) -> float | None:
    """Navigation start to the task page's first render with data (its own mark)."""
    marks = await page.evaluate(
        "performance.getEntriesByName('asyncfl:task-painted').map(e => e.startTime)"
    )
    return float(marks[0]) if marks else None


async def updates_seen(page: Page) -> tuple[int, str]:
    """Live updates the page applied (stream or poll) and over which transport."""
    found = await page.evaluate(
        "[document.getElementById('task').dataset.updates || '0',"
        " document.getElementById('task').dataset.transport || '']"
    )
    return int(found[0]), str(found[1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get("ASYNCFL_LOAD_ADMIN_TOKEN", "")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            pages = [
                await open_task_page(browser, args.url, token, args.task) for _ in range(args.pages)
            ]
            opened = time.time()
            if args.ready is not None:
                args.ready.write_text(str(opened))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
            seconds = time.time() - opened
            counters = [seen for _, seen in pages]
            updates = [await updates_seen(page) for page, _ in pages]
        finally:
            await browser.close()
    total = sum(n for n, _ in updates)
    return {
        "pages": args.pages,
        "seconds": round(seconds, 1),
        "updates": total,
        "updates_per_page_s": round(total / seconds / args.pages, 3),
        "transports": sorted({t for _, t in updates}),
        "live_ok": sum(c["live_ok"] for c in counters),  # /live reads: opening, gaps
        "console_errors": [e for c in counters for e in c["errors"]][:20],
        "failed_requests": [f for c in counters for f in c["failed"]][:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="open dashboard task pages")
    parser.add_argument("--url", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, help="written once every page is open")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
