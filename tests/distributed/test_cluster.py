"""Distributed mode on the real Redis and PostgreSQL: replicas, aggregators, admission."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.errors import ServerError
from server.admin_client import AdminClient
from server.cluster import LocalCluster
from server.process import ServerProcess
from tests.server.fleet import Fleet, create_task, settled, status, wait_for
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


async def _knows_task(server: ServerProcess, task_id: str = "t1") -> None:
    """Wait until a replica has heard of a task created through another one."""
    for _ in range(150):
        try:
            await status(server, task_id)
            return
        except ServerError as exc:
            if exc.status != 404:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"{server.url} never heard of task {task_id}")


async def test_replicas_and_an_aggregator_train_one_task(cluster: LocalCluster) -> None:
    cluster.start(replicas=2, aggregators=1)
    first, second = cluster.replicas
    await create_task(first, aggregation={"aggregation_goal": 3})
    await _knows_task(second)
    fleets = [await Fleet(first).enroll(3), await Fleet(second).enroll(3, seed=1)]
    try:
        await asyncio.gather(*(f.run(rounds=2) for f in fleets))
    finally:
        for fleet in fleets:
            await fleet.close()

    final = await wait_for(second, settled(12, 3), timeout_s=30)
    via_first = await wait_for(first, lambda s: s["version"] == final["version"])
    # every version consumed at least K updates (partials are merged whole)
    assert 1 <= final["version"] <= final["updates_applied"] // 3
    assert via_first["updates_applied"] == final["updates_applied"]
    assert final["aggregated_here"] is False


async def test_concurrency_is_respected_across_replicas(cluster: LocalCluster) -> None:
    cluster.start(replicas=2, aggregators=0)
    first, second = cluster.replicas
    await create_task(first, concurrency=5)
    await _knows_task(second)
    fleets = [await Fleet(first).enroll(10), await Fleet(second).enroll(10)]
    try:
        answers = await asyncio.gather(
            *(f.api.checkin("t1", d.token, {}) for f in fleets for d in f.devices)
        )
    finally:
        for fleet in fleets:
            await fleet.close()

    admitted = [a for a in answers if a.admitted]
    assert len(admitted) == 5
    assert all(a.retry_after > 0 for a in answers if not a.admitted)
    assert (await status(second))["active_sessions"] == 5


async def test_uploads_wait_for_an_aggregator_and_are_not_lost(cluster: LocalCluster) -> None:
    cluster.start(replicas=1, aggregators=0)
    (replica,) = cluster.replicas
    await create_task(replica, aggregation={"aggregation_goal": 2})
    fleet = await Fleet(replica).enroll(2)
    try:
        await fleet.run(rounds=2)  # acknowledged: in the stream, nobody folds yet
    finally:
        await fleet.close()
    before = await status(replica)
    cluster.add_aggregator()
    after = await wait_for(replica, settled(4, 2), timeout_s=30)

    assert (before["updates_accepted"], before["updates_applied"]) == (4, 0)
    assert 1 <= after["version"] <= after["updates_applied"] // 2


async def test_sync_rounds_span_replicas_and_take_exactly_goal_updates(
    cluster: LocalCluster,
) -> None:
    cluster.start(replicas=2, aggregators=1)
    first, second = cluster.replicas
    await create_task(
        first,
        concurrency=100,
        aggregation={"mode": "sync", "aggregation_goal": 3, "over_selection": 0.0},
    )
    await _knows_task(second)
    fleets = [await Fleet(first).enroll(3), await Fleet(second).enroll(3, seed=1)]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.run(rounds=1) for f in fleets)), 120)
    finally:
        for fleet in fleets:
            await fleet.close()

    final = await wait_for(first, lambda s: s["updates_applied"] == 6, timeout_s=30)
    async with AdminClient(first.url, first.admin_token) as admin:
        versions = await admin.versions("t1")
    assert final["version"] == 2
    assert sorted(v["num_updates"] for v in versions if v["version"] > 0) == [3, 3]
