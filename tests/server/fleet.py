"""Test helpers: a task on a running server and SDK clients that train against it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from client_sdk.errors import SdkError, ServerError
from client_sdk.options import ClientOptions
from client_sdk.results import NoSlot, RoundResult, Trained
from server.admin_client import AdminClient
from server.clientfleet import ClientFleet, FleetDevice
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
            raise AssertionError(
                f"condition not met in {timeout_s}s; last status {current}\n"
                f"server log, last warnings:\n{_log_tail(server)}"
            )
        await asyncio.sleep(0.1)


def _log_tail(server: ServerProcess, lines: int = 40) -> str:
    """The server's last log lines at INFO from the leader, or WARNING and above (what a
    failed wait needs to be diagnosed after CI)."""
    try:
        text = server.log_file.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    keep = [t for t in text if " WARNING " in t or " ERROR " in t or "server.tasks" in t]
    return "\n".join(keep[-lines:])


def settled(accepted: int, goal: int) -> Callable[[dict[str, Any]], bool]:
    """All ``accepted`` updates in, and applied but for a buffer short of K: versions
    consume replicas' partials whole, so the last few may wait for more updates."""
    return lambda s: s["updates_accepted"] == accepted and accepted - s["updates_applied"] < goal


class Fleet:
    """N enrolled SDK clients (:class:`client_sdk.Client`) sharing one connection pool."""

    def __init__(
        self, server: ServerProcess, task_id: str = "t1", *, options: ClientOptions | None = None
    ) -> None:
        self.server = server
        self.task_id = task_id
        self._fleet = ClientFleet(server.url, task_id, **({"options": options} if options else {}))
        self.api = self._fleet.api
        self.devices = self._fleet.devices
        self.acked: list[dict[str, Any]] = []

    async def enroll(
        self, n: int, seed: int = 0, info: Callable[[int], dict[str, Any]] | None = None
    ) -> Fleet:
        x, y, _, _ = load_dataset("digits")
        rng = np.random.default_rng(seed)
        shards = [rng.choice(len(x), size=40, replace=False) for _ in range(n)]
        await self._fleet.enroll(
            self.server.enrollment_key, [(x[i], y[i]) for i in shards], seed=seed, info=info
        )
        return self

    async def round(self, device: FleetDevice) -> RoundResult:
        result = await device.client.run_once()
        if isinstance(result, Trained):
            self.acked.append(
                {
                    "update_id": result.update_id,
                    "version": result.version,
                    "staleness": result.staleness,
                    "duplicate": result.duplicate,
                }
            )
        return result

    async def run(self, rounds: int) -> list[RoundResult]:
        """Every device does ``rounds`` sessions (waiting when turned away)."""

        async def one(device: FleetDevice) -> list[RoundResult]:
            done: list[RoundResult] = []
            while len(done) < rounds:
                try:
                    result = await self.round(device)
                except ServerError as exc:  # a backend blip the client's retries outlasted
                    if exc.status not in (429, 503):
                        raise
                    await asyncio.sleep(min(exc.retry_after or 0.2, 0.5))
                    continue
                if isinstance(result, NoSlot):
                    await asyncio.sleep(min(result.retry_after, 0.2))
                    continue
                done.append(result)
            return done

        results = await asyncio.gather(*(one(d) for d in self.devices))
        return [o for r in results for o in r]

    async def run_until(self, stop: Callable[[], bool]) -> None:
        """Keep training until ``stop()``; connection errors (a dying server) end a device."""

        async def one(device: FleetDevice) -> None:
            while not stop():
                try:
                    result = await self.round(device)
                except SdkError:
                    await asyncio.sleep(0.05)
                    continue
                if isinstance(result, NoSlot):
                    await asyncio.sleep(min(result.retry_after, 0.1))

        await asyncio.gather(*(one(d) for d in self.devices))

    async def close(self) -> None:
        await self._fleet.close()
