"""Enrollments are group-committed: a burst goes into a few transactions, every device
of it is there by id, and an id that exists is refused alone (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from server.errors import Conflict
from server.settings import Settings
from server.storage.database import create_engine, upgrade
from server.storage.devices import DeviceRepository
from server.storage.records import DeviceRecord
from server.storage.schema import devices


async def _repo(url: str) -> tuple[Any, DeviceRepository, list[int]]:
    engine = create_engine(url)
    await upgrade(engine, Settings().migrations_dir)
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
    return engine, DeviceRepository(engine), commits


async def _ids(engine: Any) -> set[str]:
    async with engine.connect() as conn:
        return {str(r[0]) for r in await conn.execute(sa.select(devices.c.id))}


async def test_a_burst_of_enrollments_commits_together(database_url: str) -> None:
    engine, repo, commits = await _repo(database_url)
    wanted = [f"d{i:04d}" for i in range(1200)]
    try:
        await asyncio.gather(*(repo.create(DeviceRecord(d, 1.0, {"n": d})) for d in wanted))
        stored = await _ids(engine)
    finally:
        await engine.dispose()

    assert stored == set(wanted)
    assert len(commits) <= 4, f"{len(commits)} transactions for {len(wanted)} enrollments"


async def test_an_existing_id_is_refused_alone(database_url: str) -> None:
    engine, repo, _ = await _repo(database_url)
    try:
        await repo.create(DeviceRecord("taken", 1.0))
        results = await asyncio.gather(
            *(repo.create(DeviceRecord(d, 2.0)) for d in ["a", "taken", "b"]),
            return_exceptions=True,
        )
        stored = await _ids(engine)
    finally:
        await engine.dispose()

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Conflict) and results[1].code == "device_exists"
    assert stored == {"taken", "a", "b"}


async def test_one_at_a_time_each_is_committed_before_it_returns(tmp_path: Any) -> None:
    engine, repo, _ = await _repo(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    try:
        for d in ["x", "y"]:
            await repo.create(DeviceRecord(d, 1.0))
            assert d in await _ids(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("count", [1, 3])
async def test_a_cancelled_enrollment_leaves_the_others_committed(
    tmp_path: Any, count: int
) -> None:
    engine, repo, _ = await _repo(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        gone = asyncio.create_task(repo.create(DeviceRecord("gone", 1.0)))
        others = [
            asyncio.create_task(repo.create(DeviceRecord(f"o{i}", 1.0))) for i in range(count)
        ]
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(*others)
        stored = await _ids(engine)
    finally:
        await engine.dispose()

    assert {f"o{i}" for i in range(count)} <= stored
