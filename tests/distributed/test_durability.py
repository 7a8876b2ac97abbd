"""Backends failing under load: nothing acknowledged is lost, nothing is half-written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.errors import ServerError
from server.cluster import LocalCluster
from tests.distributed.redis_server import RedisServer
from tests.server.fleet import Fleet, create_task, settled, status, wait_for


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def test_redis_down_gets_503_and_loses_nothing_acknowledged(
    tmp_path: Path, postgres_url: str, exports_dir: Path, redis_server: RedisServer
) -> None:
    with LocalCluster(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_server.url,
        exports_dir=exports_dir,
        extra_env={"ASYNCFL_DEVICE_RATE_PER_S": "1000"},
    ) as cluster:
        cluster.start(replicas=1, aggregators=1)
        (replica,) = cluster.replicas
        await create_task(replica, aggregation={"aggregation_goal": 4})
        fleet = await Fleet(replica).enroll(4)
        try:
            await fleet.run(rounds=3)  # 12 acknowledged
            redis_server.kill()  # kill -9: only the AOF remains
            with pytest.raises(ServerError) as down:
                await fleet.round(fleet.devices[0])
            redis_server.start()  # same dir: the AOF is replayed
            await fleet.run(rounds=1)  # 4 more once Redis is back
        finally:
            await fleet.close()
        final = await wait_for(replica, settled(16, 4), timeout_s=60)

    assert down.value.status == 503
    assert down.value.retry_after is not None and down.value.retry_after > 0
    assert len(fleet.acked) == 16
    assert 1 <= final["version"] <= final["updates_applied"] // 4


async def test_postgres_unreachable_during_commits_then_the_leader_catches_up(
    tmp_path: Path, postgres_url: str, exports_dir: Path
) -> None:
    from tests.distributed.proxy import TcpProxy
    from tests.services import REDIS_URL

    host, port = "127.0.0.1", 5432
    async with TcpProxy(host, port) as proxy:
        proxied = postgres_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        with LocalCluster(
            tmp_path,
            database_url=postgres_url,
            redis_url=REDIS_URL,
            exports_dir=exports_dir,
            extra_env={"ASYNCFL_DEVICE_RATE_PER_S": "1000"},
        ) as cluster:
            cluster.start(replicas=1, aggregators=0)
            (replica,) = cluster.replicas
            await create_task(replica, aggregation={"aggregation_goal": 2})
            cluster.env["ASYNCFL_DATABASE_URL"] = proxied  # the aggregator goes through it
            await asyncio.to_thread(cluster.add_aggregator)  # the proxy needs this loop
            fleet = await Fleet(replica).enroll(2)
            try:
                await fleet.run(rounds=2)
                await wait_for(replica, settled(4, 2), timeout_s=30)
                proxy.cut()  # the aggregator loses PostgreSQL mid-flight
                await fleet.run(rounds=2)  # accepted (Redis), not committable
                await asyncio.sleep(2.0)
                stuck = await status(replica)
                proxy.restore()
            finally:
                await fleet.close()
            final = await wait_for(replica, settled(8, 2), timeout_s=60)

    assert stuck["updates_accepted"] == 8
    assert stuck["updates_applied"] <= 4  # nothing committed while the database was away
    assert stuck["version"] < final["version"] <= final["updates_applied"] // 2
