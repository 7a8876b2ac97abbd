"""Distributed mode: every API replica serves the dashboard and the same fleet figures,
which come from the shared database (check-ins counted by each replica add up)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client_sdk.errors import ServerError
from server.admin_client import AdminClient
from server.cluster import LocalCluster
from server.process import ServerProcess
from tests.server.fleet import Fleet, create_task, settled, wait_for
from tests.services import REDIS_URL, require_redis


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, exports_dir: Path) -> Iterator[LocalCluster]:
    require_redis()
    with LocalCluster(
        tmp_path,
        database_url=postgres_url,
        redis_url=REDIS_URL,
        exports_dir=exports_dir,
        extra_env={"ASYNCFL_DEVICE_RATE_PER_S": "1000"},
    ) as running:
        yield running


async def _fleet_doc(server: ServerProcess, applied: int) -> dict[str, Any]:
    async with AdminClient(server.url, server.admin_token) as admin:
        for _ in range(100):
            doc: dict[str, Any] = await admin.request("GET", "/admin/v1/tasks/t1/timeline")
            fleet: dict[str, Any] = await admin.request("GET", "/admin/v1/tasks/t1/fleet")
            if (
                doc["checkins"]["admitted"] >= 8
                and sum(r["updates"] for r in fleet["tiers"]) == applied
            ):
                return {"checkins": doc["checkins"], "tiers": fleet["tiers"]}
            await asyncio.sleep(0.1)
    raise AssertionError(f"{server.url}: figures never settled: {doc} {fleet}")


async def _knows_task(server: ServerProcess) -> None:
    """Wait until a replica has heard of the task created through the other one."""
    for _ in range(150):
        try:
            await wait_for(server, lambda s: True, timeout_s=1)
            return
        except ServerError as exc:
            if exc.status != 404:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{server.url} never heard of task t1")


async def test_every_replica_serves_the_dashboard_and_the_same_figures(
    cluster: LocalCluster,
) -> None:
    cluster.start(replicas=2, aggregators=1)
    first, second = cluster.replicas
    await create_task(first, aggregation={"aggregation_goal": 2})
    await _knows_task(second)
    fleets = [
        await Fleet(first).enroll(2, info=lambda i: {"tier": "low"}),
        await Fleet(second).enroll(2, seed=1, info=lambda i: {"tier": "high"}),
    ]
    try:
        await asyncio.gather(*(f.run(rounds=2) for f in fleets))
    finally:
        for fleet in fleets:
            await fleet.close()
    # partials are merged whole: a version may take 3 of K = 2, and the last one wait
    status = await wait_for(second, settled(8, 2), timeout_s=30)
    applied = status["updates_applied"]

    docs = [await _fleet_doc(server, applied) for server in (first, second)]
    async with aiohttp.ClientSession() as http:
        pages = []
        for server in (first, second):
            async with http.get(f"{server.url}/dashboard") as resp:
                pages.append((resp.status, "asyncfl dashboard" in await resp.text()))

    assert pages == [(200, True), (200, True)]
    assert docs[0] == docs[1]
    assert docs[0]["checkins"]["admitted"] == 8  # 4 from each replica, summed in PostgreSQL
    by_tier = {r["tier"]: r["updates"] for r in docs[0]["tiers"]}
    assert set(by_tier) == {"low", "high"} and sum(by_tier.values()) == applied >= 7
    assert all(applied - 4 <= n <= 4 for n in by_tier.values())
