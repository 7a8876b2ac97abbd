"""Secure aggregation with web SDK devices end to end: two in Node (onnxruntime-node, the
mask service key pinned) and one in headless Chromium (onnxruntime-web in a Web Worker,
the key vouched for by an operator signature) train a plain task and a secure one, round
by round, against a real ``asyncfl serve`` whose own mask service child releases the sums
of masks. The secure model ends within 0.01 accuracy of the plain one; every upload that
reached the server, and the buffer it persisted, is masked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client_sdk.api import UPDATE_FIELDS
from client_sdk.wire import decode_tensors, unpack
from server.demo_web import DemoTask, WebDemo
from server.demo_web_run import chromium, serve
from server.modeling.datasets import load_dataset
from server.process import ServerProcess
from server.secagg.keys import MaskKeys, operator_keygen, sign_mask_key
from server.tasks.checkpoints import CheckpointLog
from tests.sdk.proxy import FaultProxy
from tests.server.fleet import create_task, status, wait_for
from tests.web.support import QUICK, built, run_device, write_data

DEVICES = 3  # one per round each: K = threshold = 3, so a version per round, staleness 0
ROUNDS = 4
TOLERANCE = 0.01  # accuracy, secure vs plain (the same devices, seeds and data)
PLAIN = {
    "concurrency": 10,
    "plan": {"lr": 0.1, "batch_size": 16, "epochs": 1},
    "aggregation": {
        "aggregation_goal": DEVICES,
        "clip_norm": 5.0,
        "optimizer": {"name": "fedavg", "lr": 1.0},
    },
}
SECURE = {**PLAIN, "secure_aggregation": {"threshold": DEVICES}}
MASKED_FIELDS = UPDATE_FIELDS | {"secagg"}
LOGREG_PARAMS = 10 * 64 + 10


@dataclass
class SecureServer:
    server: ServerProcess
    mask_key: bytes  # what a pinning app ships
    operator_key: bytes  # what an app trusting the operator ships


@pytest.fixture(scope="module")
def secure_server(
    tmp_path_factory: pytest.TempPathFactory, exports_dir: Path
) -> Iterator[SecureServer]:
    """A server of its own: its mask service key is made and signed by an operator before
    any secure task starts the mask service child (as an operator would set it up)."""
    root = tmp_path_factory.mktemp("secagg-web")
    proc = ServerProcess(root / "server", env={"ASYNCFL_EXPORTS_DIR": str(exports_dir)})
    proc.start()
    try:
        keys_dir = proc.data_dir / "secagg"
        mask_key = MaskKeys.load_or_create(keys_dir).public
        operator_key = operator_keygen(root / "operator.key")
        sign_mask_key(root / "operator.key", keys_dir)
        yield SecureServer(proc, mask_key, operator_key)
    finally:
        proc.stop(timeout_s=10)


def _looks_masked(words: np.ndarray[Any, Any]) -> float:
    """The share of words below 2**30 in magnitude as int32: ~1/2 for a uniform (masked)
    vector, 1 for anything the fixed-point scale lets an unmasked update or sum be."""
    values = np.abs(words.astype(np.uint32).view(np.int32).astype(np.int64))
    return float(np.mean(values < 2**30))


def _shards(n: int) -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    x, y, _, _ = load_dataset("digits")
    return [(x[i::n], y[i::n]) for i in range(n)]


class Fleet:
    """Node devices 1.. (the harness) and device 0 in a Chromium page, all through one
    proxy in front of the server, one round each at a time."""

    def __init__(
        self, secure: SecureServer, proxy: FaultProxy, site: str, page: Any, tmp: Path
    ) -> None:
        self.secure, self.proxy, self.site, self.page, self.tmp = secure, proxy, site, page, tmp
        self.data = [
            write_data(tmp / f"shard-{i}.msgpack", x, y)
            for i, (x, y) in enumerate(_shards(DEVICES))
        ]
        self.results: list[dict[str, Any]] = []
        self.browser_results: list[dict[str, Any]] = []

    def _node(self, i: int, task: str, seed: int, trust: dict[str, str] | None) -> dict[str, Any]:
        return {
            "serverUrl": self.proxy.url,
            "task": task,
            "enrollmentKey": self.secure.server.enrollment_key,
            "storage": str(self.tmp / f"device-{i}"),
            "backend": "node",
            "data": str(self.data[i]),
            "seed": seed,
            "options": {**QUICK, "secaggTrust": trust},
        }

    async def _browser(self, task: str, seed: int) -> dict[str, Any]:
        # the page's app ships the operator's key, not the mask service's
        query = f"rounds=1&task={task}&seed={seed}&operator_key={self.secure.operator_key.hex()}"
        await self.page.goto(f"{self.site}/?{query}")
        handle = await self.page.wait_for_function(
            "asyncflDemo.results.length && asyncflDemo.results", timeout=180_000
        )
        (result,) = await handle.json_value()
        errors = await self.page.evaluate("asyncflDemo.errors")
        assert errors == [], errors
        return dict(result)

    async def round(self, task: str, r: int) -> None:
        trust = {"maskKey": self.secure.mask_key.hex()}
        runs = [
            run_device(self._node(i, task, 1000 * i + r, trust), self.tmp / "runs")
            for i in range(1, DEVICES)
        ]
        *nodes, browser = await asyncio.gather(*runs, self._browser(task, r))
        for run in nodes:
            assert run.returncode == 0 and run.errors == [], run.stderr
            self.results.extend(run.results)
        self.results.append(browser)
        self.browser_results.append(browser)
        done = self.results[-DEVICES:]
        assert all(d["kind"] == "trained" for d in done), (task, r, done)
        await wait_for(self.secure.server, lambda s: s["version"] >= r + 1, task, timeout_s=120)

    async def train(self, task: str) -> dict[str, Any]:
        for r in range(ROUNDS):
            await self.round(task, r)
        return await wait_for(
            self.secure.server,
            lambda s: (s["last_eval"] or {}).get("version") == ROUNDS,
            task,
            timeout_s=60,
        )


@pytest.fixture
async def proxy(secure_server: SecureServer) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(secure_server.server.port).start()
    yield p
    await p.close()


def _uploads(proxy: FaultProxy, task: str) -> list[dict[str, Any]]:
    return [
        unpack(r.body)
        for r in proxy.requests
        if r.path == f"/v1/tasks/{task}/updates" and r.method == "POST"
    ]


async def test_web_devices_train_a_secure_task_as_well_as_a_plain_one_and_only_masks_leave(
    secure_server: SecureServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    built()
    server = secure_server.server
    plain, secure = f"wp-{uuid.uuid4().hex[:6]}", f"wsa-{uuid.uuid4().hex[:6]}"
    await create_task(server, plain, **PLAIN)
    await create_task(server, secure, **SECURE)
    x0, y0 = _shards(DEVICES)[0]
    demo = WebDemo(
        proxy.url, server.admin_token, DemoTask(plain, server.enrollment_key, [(x0, y0)])
    )
    async with serve(demo.app()) as site, chromium() as browser:
        page = await (await browser.new_context()).new_page()
        problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        fleet = Fleet(secure_server, proxy, site, page, tmp_path)
        plain_done = await fleet.train(plain)
        secure_done = await fleet.train(secure)
        # one more update, left in the buffer (short of K): what the server keeps of it
        extra = await run_device(
            fleet._node(1, secure, 7, {"maskKey": secure_server.mask_key.hex()}), tmp_path / "runs"
        )
    log = CheckpointLog(server.data_dir / "checkpoints" / secure, "never")
    latest = log.read_latest()
    log.close()

    plain_acc, secure_acc = (
        plain_done["last_eval"]["accuracy"],
        secure_done["last_eval"]["accuracy"],
    )
    print(f"secagg web e2e: plain {plain_acc:.4f} secure {secure_acc:.4f} after {ROUNDS} versions")
    assert all(r["kind"] == "trained" and r["staleness"] == 0 for r in fleet.results), fleet.results
    assert len(fleet.results) == 2 * ROUNDS * DEVICES and len(fleet.browser_results) == 2 * ROUNDS
    assert (plain_done["version"], secure_done["version"]) == (ROUNDS, ROUNDS)
    assert secure_acc >= 0.8  # it learned
    assert abs(secure_acc - plain_acc) <= TOLERANCE
    # what reached the server: the plain task's float deltas, the secure task's masks only
    masked = _uploads(proxy, secure)
    assert len(masked) == ROUNDS * DEVICES + 1
    assert demo.requests["update"] == 2 * ROUNDS  # the Chromium device's, through the proxy too
    for body in masked:
        assert set(body) == MASKED_FIELDS and body["encoding"] == "masked-fixed32"
        (words,) = decode_tensors(body["tensors"])
        assert words.dtype == np.uint32 and words.shape == (LOGREG_PARAMS,)
        assert 0.4 < _looks_masked(words) < 0.6
    assert all(body["encoding"] == "float32" for body in _uploads(proxy, plain))
    # what the server persisted of the update it holds: masked, never in the clear
    assert extra.results[0]["kind"] == "trained"
    assert (await status(server, secure))["updates_buffered"] == 1
    assert latest is not None
    held = np.frombuffer(latest.total, np.uint32)
    assert held.size == LOGREG_PARAMS and 0.4 < _looks_masked(held) < 0.6
    assert problems == []


@pytest.mark.parametrize(
    ("trust", "why"),
    [
        (None, "no trust anchor"),
        ({"maskKey": "00" * 32}, "not the pinned one"),
        ({"operatorKey": "11" * 32}, "not signed by the operator"),
    ],
)
async def test_a_web_device_that_does_not_trust_the_key_uploads_nothing_and_gives_the_slot_back(
    secure_server: SecureServer,
    proxy: FaultProxy,
    tmp_path: Path,
    trust: dict[str, str] | None,
    why: str,
) -> None:
    server = secure_server.server
    task = f"wsu-{uuid.uuid4().hex[:6]}"
    await create_task(server, task, **SECURE)
    data = write_data(tmp_path / "d.msgpack", *_shards(DEVICES)[0])
    config = {
        "serverUrl": proxy.url,
        "task": task,
        "enrollmentKey": server.enrollment_key,
        "storage": str(tmp_path / "device"),
        "data": str(data),
        "options": {**QUICK, "secaggTrust": trust},
    }

    run = await run_device(config, tmp_path)

    (result,) = run.results
    (refused,) = run.events("secagg_refused")
    after = await status(server, task)
    assert result["kind"] == "rejected" and result["reason"] == "secagg_untrusted"
    assert why in result["message"] and why in refused["error"]
    assert _uploads(proxy, task) == []
    assert proxy.count(f"/v1/tasks/{task}/sessions/release", "POST") == 1
    assert after["updates_accepted"] == 0 and after["active_sessions"] == 0
