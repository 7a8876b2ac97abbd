"""The web SDK in headless Chromium (Debian's, driven by Playwright) against a real
``asyncfl serve``, through the web demo's page server: a page checks in, trains and
uploads; the server applies the update; a reload resumes the unfinished session and
fetches no graph again; nothing logs a console error. And the Trainer in a Web Worker
matches the Python Trainer for every zoo model (as in test_parity.py)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client_sdk.wire import unpack
from load_tests.web_jobs import browser_job, parity_error, step_job
from server.demo_web import DemoTask, WebDemo
from server.demo_web_run import chromium, serve
from server.modeling.datasets import load_dataset
from server.modeling.zoo import ZOO
from server.process import ServerProcess
from tests.modeling.support import BundleCache
from tests.server.fleet import create_task, status, wait_for
from tests.web.support import built
from tests.web.test_parity import STEPS, TOLERANCE

GOAL_1 = {"aggregation_goal": 1, "optimizer": {"name": "fedavg", "lr": 1.0}}


class Page:
    """A Playwright page that records console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(str(e)))

    async def wait(self, expression: str, timeout_s: float = 60.0) -> Any:
        handle = await self.page.wait_for_function(expression, timeout=timeout_s * 1000)
        return await handle.json_value()


@pytest.fixture
async def site(server: ServerProcess) -> AsyncIterator[tuple[str, WebDemo]]:
    built()
    x, y, _, _ = load_dataset("digits")
    demo = WebDemo(
        server.url,
        server.admin_token,
        DemoTask("unused", server.enrollment_key, [(x[:240], y[:240])]),
    )
    async with serve(demo.app()) as url:
        yield url, demo


async def test_a_page_trains_uploads_and_a_reload_resumes_without_refetching_graphs(
    server: ServerProcess, site: tuple[str, WebDemo]
) -> None:
    url, demo = site
    quick, slow = f"wq-{uuid.uuid4().hex[:6]}", f"ws-{uuid.uuid4().hex[:6]}"
    await create_task(server, quick, model="mlp", concurrency=10, aggregation=GOAL_1)
    # same model, so the same graphs; training stops on a 3 s budget, not on the data
    # (1,000 epochs of batch 16 took under 3 s on a fast machine: batch 1 is 16x the steps)
    await create_task(
        server,
        slow,
        model="mlp",
        concurrency=10,
        aggregation=GOAL_1,
        plan={"lr": 0.01, "batch_size": 1, "epochs": 1000, "time_budget_s": 3.0},
    )
    async with chromium() as browser:
        page = Page(await (await browser.new_context()).new_page())

        await page.page.goto(f"{url}/?rounds=1&task={quick}")
        (first,) = await page.wait("asyncflDemo.results.length && asyncflDemo.results")
        applied = await wait_for(server, lambda s: s["version"] >= 1, quick)
        after_first = dict(demo.requests)

        await page.page.goto(f"{url}/?rounds=1&task={slow}")
        await page.wait("asyncflDemo.events.some(e => e.kind === 'progress')")
        await page.page.reload()  # mid-training: the session is open in IndexedDB
        (resumed,) = await page.wait("asyncflDemo.results.length && asyncflDemo.results")
        events = await page.page.evaluate(
            "asyncflDemo.events.map(e => [e.kind, e.data.action ?? null])"
        )
        errors = await page.page.evaluate("asyncflDemo.errors")

    assert first["kind"] == "trained" and first["version"] == 0 and not first["resumed"]
    assert applied["updates_applied"] == 1
    assert after_first == {"enroll": 1, "checkin": 1, "artifact": 4, "params": 1, "update": 1}
    assert (
        resumed["kind"] == "trained" and resumed["resumed"] and resumed["stopped"] == "time_budget"
    )
    assert events[0] == ["resume", "continue"]
    assert demo.requests["artifact"] == 4  # the reloads fetched no graph again
    assert demo.requests["enroll"] == 1 and demo.requests["checkin"] == 2  # one per session
    assert (await status(server, slow))["updates_accepted"] == 1
    assert errors == [] and page.problems == []


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.getbasetemp() / "modeling-bundles")


async def test_training_in_a_chromium_worker_matches_the_python_trainer(
    server: ServerProcess, site: tuple[str, WebDemo], bundles: BundleCache
) -> None:
    url, demo = site
    jobs = {}
    for model in sorted(ZOO):
        folder = await asyncio.to_thread(bundles, model)
        job = step_job(model, folder, steps=STEPS)
        demo.jobs[model], jobs[model] = browser_job(job.job), job
    diffs = {}
    async with chromium() as browser:
        page = Page(await browser.new_page())
        for model in sorted(ZOO):
            await page.page.goto(f"{url}/demo/bench.html?job={model}")
            out = await page.wait("window.asyncflBench", timeout_s=120)
            assert "error" not in out, out
            result = unpack(base64.b64decode(out["params"]))
            assert len(out["losses"]) == STEPS
            diffs[model] = parity_error(jobs[model], result)

    assert all(d <= TOLERANCE for d in diffs.values()), diffs
    assert page.problems == []
