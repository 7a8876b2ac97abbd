"""First paint of the dashboard's task page with a long history (a target of issue 19).

    python load_tests/dashboard_paint.py --versions 1000 --json [--screenshots docs]

1. Start the embedded default (``asyncfl serve``) and create a logreg task on digits
   (K = ``--aggregation-goal``, held-out evaluation of every version, federated
   evaluation by ``--eval-fraction`` of the check-ins).
2. Train it with ``--devices`` devices of three tiers (the SDK's API calls and ONNX
   Runtime trainer, real uploads with their cost metrics) until ``--versions`` versions
   are committed.
3. Load the task page in headless Chromium ``--loads`` times (signed in, a fresh page
   each time) and read the page's own mark of its first render with data
   (``asyncfl:task-painted``, from navigation start), plus the size and time of the first
   ``/live`` answer.

Prints one JSON line: ``paint_ms`` (median, max), ``live_bytes``, ``live_ms``, ``versions``.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.api import ServerApi
from client_sdk.bundle import Bundle, decode_params
from client_sdk.errors import ServerError
from client_sdk.trainer import Trainer
from client_sdk.training import plan_from
from client_sdk.transport import AiohttpTransport
from load_tests.pages import CHROMIUM, FLAGS, first_paint_ms
from load_tests.target import TIERS, log, start_server
from server.admin_client import AdminClient
from server.modeling.datasets import load_dataset


class HistoryFleet:
    """Devices that train a task for real, as fast as they can, until it has a history."""

    def __init__(self, url: str, key: str, devices: int) -> None:
        self.transport = AiohttpTransport(url, limit=64)
        self.api = ServerApi(self.transport)
        self.key = key
        self.count = devices
        self.trainer: Trainer | None = None
        self.manifest: Any = None
        self.params: dict[int, list[np.ndarray[Any, Any]]] = {}
        x, y, _, _ = load_dataset("digits")
        self.data = [(x[i::devices], y[i::devices]) for i in range(devices)]

    async def _bundle(self, token: str, artifacts: dict[str, str]) -> Trainer:
        if self.trainer is None:
            parts = {}
            for name in ("manifest", "train_step", "eval_step", "infer"):
                fetched = await self.api.fetch(f"/v1/artifacts/{artifacts[name]}", token)
                assert fetched.body is not None
                parts[name] = fetched.body
            bundle = Bundle.from_parts(parts.pop("manifest"), parts, None)
            self.manifest = bundle.manifest
            self.trainer = Trainer(bundle, threads=1)
        return self.trainer

    async def _device(self, i: int, task: str, done: asyncio.Event) -> None:
        _, token = await self.api.enroll(self.key, {"tier": TIERS[i % len(TIERS)]})
        x, y = self.data[i]
        rng = random.Random(i)
        while not done.is_set():
            answer = await self.api.checkin(task, token, {})
            if not answer.admitted:
                await asyncio.sleep(0.05)
                continue
            trainer = await self._bundle(token, dict(answer.artifacts or {}))
            fetched = 0
            if answer.version not in self.params:
                body = (await self.api.fetch(answer.params_url, token)).body
                assert body is not None
                fetched = len(body)
                self.params[answer.version] = decode_params(body, self.manifest.params)
            base = self.params[answer.version]
            if answer.evaluate:
                result = trainer.evaluate(base, x, y)
                metrics = {"loss": result.loss, "num_examples": result.count}
                if result.accuracy is not None:
                    metrics["accuracy"] = result.accuracy
                await self.api.report_evaluation(task, answer.session, answer.version, metrics)
            trained = trainer.train(
                base, x, y, plan_from(answer.plan or {}, math.inf), seed=rng.randrange(2**31)
            )
            report = {
                "loss": trained.mean_loss,
                "train_s": trained.wall_s,
                "download_bytes": fetched,
            }
            body = self.api.encode_update(
                answer.session, answer.version, trained.num_examples, trained.delta, report
            )
            try:
                await self.api.upload(task, body)
            except ServerError as exc:
                if exc.status not in (409, 410):
                    raise

    async def run(self, task: str, done: asyncio.Event) -> None:
        await asyncio.gather(*(self._device(i, task, done) for i in range(self.count)))

    async def close(self) -> None:
        await self.transport.close()


async def build_history(url: str, admin_token: str, key: str, args: argparse.Namespace) -> int:
    config = {
        "concurrency": args.devices,
        "eval_every": 1,
        "federated_eval_fraction": args.eval_fraction,
        "plan": {"lr": 0.1, "batch_size": 32, "epochs": 1},
        "aggregation": {
            "aggregation_goal": args.aggregation_goal,
            "optimizer": {"name": "fedavg", "lr": 1.0},
        },
    }
    async with AdminClient(url, admin_token) as admin:
        await admin.create_task(
            "history", model="logreg", config=config, evaluation={"dataset": "digits"}
        )
        fleet = HistoryFleet(url, key, args.devices)
        done = asyncio.Event()
        runner = asyncio.create_task(fleet.run("history", done))
        started = time.monotonic()
        try:
            while True:
                status = await admin.status("history")
                if status["version"] >= args.versions or runner.done():
                    break
                await asyncio.sleep(1.0)
        finally:
            done.set()
            await asyncio.gather(runner, return_exceptions=True)
            await fleet.close()
        if not runner.cancelled() and runner.exception() is not None:
            raise RuntimeError(f"the history fleet failed: {runner.exception()!r}")
        log(f"{status['version']} versions in {time.monotonic() - started:.0f} s")
        await asyncio.sleep(3.0)  # the last held-out evaluations land
        return int(status["version"])


async def measure(url: str, admin_token: str, args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    paints: list[float] = []
    live: list[tuple[int, float]] = []
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for i in range(args.loads):
                context = await browser.new_context(viewport={"width": 1400, "height": 900})
                await context.add_init_script(
                    f"sessionStorage.setItem('asyncfl.admin_token', {json.dumps(admin_token)})"
                )
                page = await context.new_page()
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("requestfailed", lambda r: problems.append(f"{r.url} {r.failure}"))
                async with page.expect_response(lambda r: "/live?" in r.url) as first:
                    await page.goto(f"{url}/dashboard#/tasks/history")
                response = await first.value
                body = await response.body()
                timing = response.request.timing
                live.append((len(body), timing["responseEnd"] - timing["requestStart"]))
                for _ in range(100):
                    painted = await first_paint_ms(page)
                    if painted is not None:
                        break
                    await asyncio.sleep(0.05)
                if painted is None:
                    raise RuntimeError("the task page never painted")
                paints.append(painted)
                if args.screenshots and i == args.loads - 1:
                    await asyncio.sleep(1.5)
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(
                        path=str(args.screenshots / "dashboard-history.png"), full_page=True
                    )
                await context.close()
        finally:
            await browser.close()
    return {
        "paint_ms_median": round(statistics.median(paints), 1),
        "paint_ms_max": round(max(paints), 1),
        "paint_ms": [round(p, 1) for p in paints],
        "live_bytes": live[0][0],
        "live_ms_median": round(statistics.median(t for _, t in live), 1),
        "page_problems": problems[:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dashboard first paint with a long history")
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--aggregation-goal", type=int, default=5)
    parser.add_argument("--eval-fraction", type=float, default=0.3)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, help="save dashboard-history.png here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="afl-paint-"))
    server = start_server(data_dir, {"ASYNCFL_DEVICE_RATE_PER_S": "10000"})
    try:
        versions = asyncio.run(
            build_history(server.url, server.admin_token, server.enrollment_key, args)
        )
        result = {
            "versions": versions,
            **asyncio.run(measure(server.url, server.admin_token, args)),
        }
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
