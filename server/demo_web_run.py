"""``asyncfl demo --web``: browsers train the digits MLP against ``asyncfl serve``.

Starts the server (embedded default) and the page server (:mod:`server.demo_web`), makes
the FedBuff task of ``asyncfl demo`` with one shard per device, and then either prints
the page's address for you to open (each tab is a device; ``?devices=4`` runs four in
one tab) or, with ``--pages N``, opens N headless Chromium pages itself, waits for the
held-out accuracy target and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from server.admin_client import AdminClient
from server.demo_web import DemoTask, WebDemo, missing_assets
from server.process import ServerProcess

TASK = "digits-web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # background tabs must not be throttled: every page is a device
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web", action="store_true", help="browsers train instead (see demo_web_run)")
    p.add_argument("--pages", type=int, default=0, help="--web: open N headless Chromium pages")
    p.add_argument("--port", type=int, default=0, help="--web: page server port (0: any free)")


@asynccontextmanager
async def serve(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 for the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's headless Chromium under Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


def run(args: argparse.Namespace) -> int:
    problems = missing_assets()
    if problems:
        print(
            "asyncfl demo --web: the web SDK is not built; run `bash .ci/install-browser` and "
            "`npm run build` in client_sdk/web. Missing:\n  " + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 2
    if args.pages and not os.path.exists(CHROMIUM):
        print(
            f"asyncfl demo --web --pages: needs {CHROMIUM} (apt-get install chromium)",
            file=sys.stderr,
        )
        return 2
    result = asyncio.run(run_web_demo(args))
    print(json.dumps(result))
    accuracy = result.get("accuracy")
    return 0 if not args.pages or (accuracy is not None and accuracy >= args.target) else 1


async def run_web_demo(args: argparse.Namespace) -> dict[str, Any]:
    from server.demo import DEFAULT_CONFIG, STABLE_EVALS
    from server.modeling.datasets import load_dataset
    from simulator.partition import dirichlet_partition

    devices = args.pages or args.devices
    data_dir = args.out / "web-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    x, y, _, _ = load_dataset("digits")
    shards = dirichlet_partition(y, devices, args.alpha, seed=args.seed, min_size=8)
    exports = os.environ.get("ASYNCFL_EXPORTS_DIR") or str(args.out / "exports")
    server = ServerProcess(
        data_dir, log_file=args.out / "server-web.log", env={"ASYNCFL_EXPORTS_DIR": exports}
    )
    await asyncio.to_thread(server.start)
    try:
        async with AdminClient(server.url, server.admin_token) as admin:
            # asyncfl demo's FedBuff, but the buffer is the weighted mean of its updates:
            # a browser device holds ~100 examples, and with goal normalization its
            # sqrt(n) example weight would scale the server's step ~10x (it diverges)
            aggregation = {**DEFAULT_CONFIG["aggregation"], "normalization": "weights"}
            config = {**DEFAULT_CONFIG, "concurrency": max(2, devices), "aggregation": aggregation}
            await admin.create_task(
                TASK,
                model="mlp",
                client_optimizer="sgd",
                config=config,
                evaluation={"dataset": "digits"},
            )
            demo = WebDemo(
                server.url,
                server.admin_token,
                DemoTask(TASK, server.enrollment_key, [(x[i], y[i]) for i in shards], args.target),
            )
            async with serve(demo.app(), args.port) as url:
                started = time.monotonic()
                if args.pages:
                    async with chromium() as browser:
                        pages = [
                            await (await browser.new_context()).new_page() for _ in range(devices)
                        ]
                        await asyncio.gather(
                            *(p.goto(f"{url}/?first={i}") for i, p in enumerate(pages))
                        )
                        status = await _watch(admin, args, started, STABLE_EVALS, quiet=args.json)
                        await admin.request("POST", f"/admin/v1/tasks/{TASK}/pause")
                else:
                    print(
                        f"open {url}/ in a browser: each tab is a device (?devices=4 runs "
                        "four in one tab); Ctrl-C stops",
                        flush=True,
                    )
                    status = await _watch(admin, args, started, STABLE_EVALS, quiet=False)
                counts = dict(demo.requests)
                body_bytes = dict(demo.body_bytes)
    finally:
        await asyncio.to_thread(server.stop)
    last_eval = status.get("last_eval") or {}
    return {
        "demo": "web",
        "pages": args.pages,
        "accuracy": last_eval.get("accuracy"),
        "versions": status["version"],
        "updates_applied": status["updates_applied"],
        "seconds": round(time.monotonic() - started, 2),
        "requests": counts,
        "body_bytes": body_bytes,
    }


async def _watch(
    admin: AdminClient, args: argparse.Namespace, started: float, stable: int, *, quiet: bool
) -> dict[str, Any]:
    """Poll the task until ``stable`` successive evaluated versions reach the target (or
    ``--seconds`` pass); print a line every 5 s unless quiet."""
    evaluated: dict[int, float] = {}
    last_line = 0.0
    while True:
        await asyncio.sleep(0.5)
        status = await admin.status(TASK)
        elapsed = time.monotonic() - started
        accuracy = (status.get("last_eval") or {}).get("accuracy")
        if accuracy is not None:
            evaluated.setdefault(status["version"], accuracy)
        if not quiet and elapsed - last_line >= 5.0:
            shown = f"{accuracy:.3f}" if accuracy is not None else "-"
            print(
                f"acc {shown}/{args.target:.2f}  v{status['version']}  "
                f"applied {status['updates_applied']}  {elapsed:5.1f}s",
                flush=True,
            )
            last_line = elapsed
        recent = list(evaluated.values())[-stable:]
        if (len(recent) == stable and min(recent) >= args.target) or elapsed >= args.seconds:
            return status
