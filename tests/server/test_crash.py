"""kill -9 while devices upload: every acknowledged update is applied exactly once.

Compared id by id: each update a device got an acknowledgement for is, after the
restart, either applied to exactly one committed version (the ledger) or held in the
restored buffer (the checkpoint at the head version), never both and never missing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from server.storage.database import create_engine
from server.tasks.checkpoints import CheckpointLog
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, status, wait_for


async def _applied(database_url: str) -> tuple[list[str], int, int]:
    """Applied ids (one row each: the id is the key), their versions' update count, head."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            ids = (
                await conn.execute(
                    sa.text(
                        "SELECT id FROM updates WHERE status = 'applied'"
                        " AND applied_version IS NOT NULL"
                    )
                )
            ).scalars()
            applied = [str(i) for i in ids]
            in_versions = (
                await conn.execute(
                    sa.text("SELECT coalesce(sum(num_updates), 0) FROM model_versions")
                )
            ).scalar_one()
            head = (await conn.execute(sa.text("SELECT current_version FROM tasks"))).scalar_one()
    finally:
        await engine.dispose()
    return applied, int(in_versions), int(head)


def _buffered(data_dir: Path, head: int) -> list[str]:
    """Ids the server brings back from its checkpoint at a restart at the head version."""
    log = CheckpointLog(data_dir / "checkpoints" / "t1", "never")
    try:
        return log.held("t1", head)
    finally:
        log.close()


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
    acked = {ack["update_id"] for ack in fleet.acked}
    await asyncio.sleep(0.3)
    stop.set()
    await training
    await fleet.close()

    server.restart()
    after = await wait_for(server, lambda s: s["updates_buffered"] < 3)
    server.stop()  # nothing changes the files while they are read
    url = f"sqlite+aiosqlite:///{server.data_dir / 'asyncfl.db'}"
    applied, in_versions, head = await _applied(url)
    buffered = _buffered(server.data_dir, head)

    assert len(applied) == len(set(applied)) == in_versions
    assert not set(applied) & set(buffered)
    missing = acked - set(applied) - set(buffered)
    assert not missing, f"acknowledged but neither applied nor buffered: {sorted(missing)}"
    assert len(buffered) == after["updates_buffered"]
    assert head >= version_before

    # the restarted server keeps training from where it was
    server.restart()
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
