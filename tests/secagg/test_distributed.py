"""Secure aggregation in distributed mode: API replicas pre-aggregate masked updates, one
aggregator releases sums of masks from a mask service run apart on its own PostgreSQL
database (never the aggregator's), on the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.clientfleet import FLEET_OPTIONS
from server.cluster import LocalCluster
from server.storage.database import create_engine
from tests.distributed.test_cluster import _knows_task
from tests.secagg.test_end_to_end import SECURE
from tests.secagg.test_failures import MaskServiceProcess
from tests.server.fleet import Fleet, create_task, settled, wait_for
from tests.services import (
    REDIS_URL,
    create_postgres_database,
    drop_postgres_database,
    require_redis,
)


@pytest.fixture
def mask_service(tmp_path: Path) -> Iterator[MaskServiceProcess]:
    url = create_postgres_database()
    service = MaskServiceProcess(tmp_path / "mask-service", database_url=url)
    try:
        yield service.start()
    finally:
        service.stop()
        drop_postgres_database(url)


@pytest.fixture
def cluster(
    tmp_path: Path, postgres_url: str, exports_dir: Path, mask_service: MaskServiceProcess
) -> Iterator[LocalCluster]:
    require_redis()
    with LocalCluster(
        tmp_path,
        database_url=postgres_url,
        redis_url=REDIS_URL,
        exports_dir=exports_dir,
        extra_env={
            "ASYNCFL_DEVICE_RATE_PER_S": "1000",
            "ASYNCFL_SECAGG_URL": mask_service.url,
            "ASYNCFL_SECAGG_TOKEN": mask_service.token,
        },
    ) as running:
        yield running


async def _ledger(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT id, status FROM updates"))
            return {str(r[0]): str(r[1]) for r in rows}
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            return {str(r[0]) for r in rows}
    finally:
        await engine.dispose()


async def test_replicas_fold_masked_updates_and_the_aggregator_releases_them(
    cluster: LocalCluster, mask_service: MaskServiceProcess, postgres_url: str
) -> None:
    cluster.start(replicas=2, aggregators=1)
    first, second = cluster.replicas
    await create_task(first, **SECURE)
    await _knows_task(second)
    options = dataclasses.replace(FLEET_OPTIONS, secagg_trust=mask_service.trust())
    fleets = [
        await Fleet(first, options=options).enroll(3),
        await Fleet(second, options=options).enroll(3, seed=1),
    ]
    try:
        results = [r for rs in await asyncio.gather(*(f.run(rounds=2) for f in fleets)) for r in rs]
    finally:
        for fleet in fleets:
            await fleet.close()
    assert all(type(r).__name__ == "Trained" for r in results)

    final = await wait_for(second, settled(12, 3), timeout_s=60)
    # a version consumes replicas' partials whole, so how many versions 12 updates make
    # depends on how the group intervals cut them (one partial may cross K): at least one
    assert final["version"] >= 1 and final["updates_dropped"] == 0
    acked = {a["update_id"] for f in fleets for a in f.acked}
    assert len(acked) == 12
    ledger = await _ledger(postgres_url)
    applied = {u for u, s in ledger.items() if s == "applied"}
    assert applied <= acked  # nothing applied that no device sent
    assert len(acked - applied) == final["updates_accepted"] - final["updates_applied"]
    # the mask service's tables live in its own database, the aggregator's in another
    service_tables = await _tables(mask_service.database_url)
    assert service_tables and not service_tables & await _tables(postgres_url)
