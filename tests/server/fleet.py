"""Test helpers: a task on a running server and SDK devices that train against it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from client_sdk.api import ServerApi
from client_sdk.device import ArtifactCache, Device, RoundOutcome
from client_sdk.errors import ServerError, TransportError
from client_sdk.transport import AiohttpTransport
from server.admin_client import AdminClient
from server.modeling.datasets import load_dataset
from server.process import ServerProcess

SMALL_TASK: dict[str, Any] = {
    "concurrency": 8,
    "plan": {"lr": 0.1, "batch_size": 16, "epochs": 1},
    "aggregation": {"aggregation_goal": 2, "optimizer": {"name": "fedavg", "lr": 1.0}},
}


async def create_task(
    server: ServerProcess, task_id: str = "t1", *, model: str = "logreg", **config: Any
) -> dict[str, Any]:
    merged = {**SMALL_TASK, **config}
    async with AdminClient(server.url, server.admin_token) as admin:
        return await admin.create_task(
            task_id, model=model, config=merged, evaluation={"dataset": "digits"}
        )


async def status(server: ServerProcess, task_id: str = "t1") -> dict[str, Any]:
    async with AdminClient(server.url, server.admin_token) as admin:
        return await admin.status(task_id)


async def wait_for(
    server: ServerProcess,
    check: Callable[[dict[str, Any]], bool],
    task_id: str = "t1",
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        current = await status(server, task_id)
        if check(current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout_s}s; last status {current}")
        await asyncio.sleep(0.1)


def settled(accepted: int, goal: int) -> Callable[[dict[str, Any]], bool]:
    """All ``accepted`` updates in, and applied but for a buffer short of K: versions
    consume replicas' partials whole, so the last few may wait for more updates."""
    return lambda s: s["updates_accepted"] == accepted and accepted - s["updates_applied"] < goal


class Fleet:
    """N enrolled devices sharing one HTTP connection pool and artifact cache."""

    def __init__(self, server: ServerProcess, task_id: str = "t1") -> None:
        self.server = server
        self.task_id = task_id
        self.transport = AiohttpTransport(server.url, limit=64)
        self.api = ServerApi(self.transport)
        self.cache = ArtifactCache()
        self.devices: list[Device] = []
        self.acked: list[dict[str, Any]] = []

    async def enroll(
        self, n: int, seed: int = 0, info: Callable[[int], dict[str, Any]] | None = None
    ) -> Fleet:
        x, y, _, _ = load_dataset("digits")
        rng = np.random.default_rng(seed)
        for i in range(n):
            idx = rng.choice(len(x), size=40, replace=False)
            device = Device(self.api, self.task_id, x[idx], y[idx], cache=self.cache, seed=i)
            await device.enroll(self.server.enrollment_key, info(i) if info else None)
            self.devices.append(device)
        return self

    async def round(self, device: Device) -> RoundOutcome:
        outcome = await device.run_once()
        if outcome.status == "uploaded" and outcome.ack is not None:
            self.acked.append(dict(outcome.ack))
        return outcome

    async def run(self, rounds: int) -> list[RoundOutcome]:
        """Every device does ``rounds`` sessions (waiting when turned away)."""

        async def one(device: Device) -> list[RoundOutcome]:
            done: list[RoundOutcome] = []
            while len(done) < rounds:
                try:
                    outcome = await self.round(device)
                except ServerError as exc:  # a backend blip: retry as the SDK would
                    if exc.status not in (429, 503):
                        raise
                    await asyncio.sleep(min(exc.retry_after or 0.2, 0.5))
                    continue
                if outcome.status == "no_slot":
                    await asyncio.sleep(min(outcome.retry_after, 0.2))
                    continue
                done.append(outcome)
            return done

        results = await asyncio.gather(*(one(d) for d in self.devices))
        return [o for r in results for o in r]

    async def run_until(self, stop: Callable[[], bool]) -> None:
        """Keep training until ``stop()``; connection errors (a dying server) end a device."""

        async def one(device: Device) -> None:
            while not stop():
                try:
                    outcome = await self.round(device)
                except (TransportError, ServerError):
                    await asyncio.sleep(0.05)
                    continue
                if outcome.status == "no_slot":
                    await asyncio.sleep(min(outcome.retry_after, 0.1))

        await asyncio.gather(*(one(d) for d in self.devices))

    async def close(self) -> None:
        await self.transport.close()
