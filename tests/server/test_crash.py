"""kill -9 while devices upload: every acknowledged update is applied exactly once."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from server.storage.database import create_engine
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, status, wait_for


async def _ledger_facts(database_url: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            applied = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*), count(DISTINCT id) FROM updates WHERE status = 'applied'"
                    )
                )
            ).one()
            in_versions = (
                await conn.execute(
                    sa.text("SELECT coalesce(sum(num_updates), 0) FROM model_versions")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(applied[0]), int(applied[1]), int(in_versions)


async def test_kill_9_during_uploads_loses_nothing_and_applies_nothing_twice(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    await create_task(
        server, aggregation={"aggregation_goal": 3, "optimizer": {"name": "fedavg", "lr": 1.0}}
    )
    fleet = await Fleet(server).enroll(8)
    stop = asyncio.Event()
    training = asyncio.create_task(fleet.run_until(stop.is_set))
    while len(fleet.acked) < 40:
        await asyncio.sleep(0.02)
    version_before = (await status(server))["version"]
    server.kill()  # kill -9 in the middle of uploads
    acked_before_kill = len(fleet.acked)
    await asyncio.sleep(0.3)
    stop.set()
    await training
    await fleet.close()

    server.restart()
    # with no new uploads, every full buffer gets committed; then the ledger is still
    after = await wait_for(server, lambda s: s["updates_buffered"] < 3)
    url = f"sqlite+aiosqlite:///{server.data_dir / 'asyncfl.db'}"
    rows, distinct, in_versions = await _ledger_facts(url)

    assert after["updates_accepted"] >= acked_before_kill
    assert after["updates_applied"] + after["updates_buffered"] == after["updates_accepted"]
    assert after["version"] >= version_before
    assert rows == distinct == in_versions == after["updates_applied"]

    # the restarted server keeps training from where it was
    fleet = await Fleet(server).enroll(4, seed=1)
    try:
        await fleet.run(rounds=2)
    finally:
        await fleet.close()
    final = await wait_for(
        server,
        lambda s: (
            s["updates_accepted"] >= after["updates_accepted"] + 8 and s["updates_buffered"] < 3
        ),
    )
    assert final["version"] > after["version"]
    assert final["updates_applied"] + final["updates_buffered"] == final["updates_accepted"]
