"""Schema and repositories on SQLite and PostgreSQL: the migrations produce exactly the
metadata, version commits are atomic and fenced, the ledger applies an update once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Conflict, NotFound, StorageError
from server.settings import Settings
from server.storage.database import (
    create_engine,
    current_revision,
    ensure_schema,
    head_revision,
    upgrade,
)
from server.storage.ledger import LedgerRepository
from server.storage.records import LedgerEntry, TaskRecord, VersionRecord
from server.storage.schema import metadata
from server.storage.tasks import StaleCommit, TaskRepository

MIGRATIONS = Settings().migrations_dir


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await upgrade(eng, MIGRATIONS)
    yield eng
    await eng.dispose()


def _task(task_id: str = "t1") -> tuple[TaskRecord, VersionRecord]:
    task = TaskRecord(
        task_id, 1.0, "active", "async", {"k": 1}, "mlp", {"manifest": "m"}, None, 0, 0
    )
    v0 = VersionRecord(task_id, 0, 1.0, "p0", "s0", "0", 0, 0)
    return task, v0


def _version(v: int, fence: int = 0, position: str = "") -> VersionRecord:
    return VersionRecord(
        "t1", v, float(v), f"p{v}", f"s{v}", position or str(v * 10), fence, 2, 0.5
    )


def _applied(*ids: str) -> list[LedgerEntry]:
    return [LedgerEntry(i, "t1", "d", 1.0, "applied", base_version=0, num_examples=5) for i in ids]


async def test_migrations_produce_exactly_the_metadata(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await current_revision(engine) == head_revision(MIGRATIONS)


async def test_ensure_schema_refuses_an_unmigrated_database_without_auto_migrate(
    tmp_path: Path,
) -> None:
    from server.errors import ConfigError

    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        with pytest.raises(ConfigError, match="asyncfl db upgrade"):
            await ensure_schema(eng, MIGRATIONS, auto_migrate=False)
        await ensure_schema(eng, MIGRATIONS, auto_migrate=True)
        assert await current_revision(eng) == head_revision(MIGRATIONS)
    finally:
        await eng.dispose()


async def test_commit_moves_the_head_and_marks_updates_applied(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    await repo.commit_version(_version(1), _applied("a", "b"))

    assert (await repo.get("t1")).current_version == 1
    assert (await repo.latest_version("t1")).params_blob == "p1"
    assert await ledger.counts("t1") == {"applied": 2}
    assert {e.applied_version for e in await ledger.entries("t1")} == {1}


async def test_a_commit_that_skips_a_version_is_refused_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    with pytest.raises(StaleCommit):
        await repo.commit_version(_version(2), _applied("a"))
    assert (await repo.get("t1")).current_version == 0
    assert await ledger.counts("t1") == {}
    with pytest.raises(NotFound):
        await repo.version("t1", 2)


async def test_only_the_newest_claimed_fence_commits(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    old = await repo.claim_fence("t1")
    await repo.commit_version(_version(1, fence=old), _applied("a"))
    new = await repo.claim_fence("t1")  # another leader takes over
    with pytest.raises(StaleCommit):
        await repo.commit_version(_version(2, fence=old), _applied("b"))
    await repo.commit_version(_version(2, fence=new), _applied("c"))

    assert new > old
    assert (await repo.get("t1")).fence == new
    assert {e.id for e in await ledger.entries("t1")} == {"a", "c"}


async def test_applying_an_update_twice_fails_the_whole_commit(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    await repo.commit_version(_version(1), _applied("a"))
    with pytest.raises(StorageError, match="already applied"):
        await repo.commit_version(_version(2), _applied("a", "c"))
    assert (await repo.get("t1")).current_version == 1
    assert await ledger.counts("t1") == {"applied": 1}


async def test_consecutive_versions_commit_together(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())

    await repo.commit_versions(
        [(_version(1), _applied("a")), (_version(2), _applied("b", "c")), (_version(3), [])]
    )

    assert (await repo.get("t1")).current_version == 3
    assert [(await repo.version("t1", v)).params_blob for v in (1, 2, 3)] == ["p1", "p2", "p3"]
    assert {e.id: e.applied_version for e in await ledger.entries("t1")} == {
        "a": 1,
        "b": 2,
        "c": 2,
    }


async def test_a_version_batch_that_fails_anywhere_writes_nothing(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    await repo.commit_version(_version(1), _applied("a"))

    with pytest.raises(StorageError, match="already applied"):
        await repo.commit_versions([(_version(2), _applied("b")), (_version(3), _applied("a"))])
    with pytest.raises(ValueError, match="consecutive"):
        await repo.commit_versions([(_version(2), _applied("b")), (_version(4), _applied("c"))])

    assert (await repo.get("t1")).current_version == 1
    assert await ledger.counts("t1") == {"applied": 1}
    with pytest.raises(NotFound):
        await repo.version("t1", 2)


async def test_the_ledger_keeps_one_row_per_update(engine: AsyncEngine) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    await repo.create(*_task())
    rejected = LedgerEntry("x", "t1", "d", 1.0, "rejected", reason="non_finite")
    await ledger.record([rejected, rejected])
    await ledger.record([rejected])
    assert await ledger.rejected_by_reason("t1") == {"non_finite": 1}
    assert not await ledger.contains("x")  # refused updates do not count as seen
    await repo.commit_version(_version(1), _applied("y"))
    assert await ledger.contains("y")


async def test_creating_a_task_twice_is_a_conflict(engine: AsyncEngine) -> None:
    repo = TaskRepository(engine)
    await repo.create(*_task())
    with pytest.raises(Conflict):
        await repo.create(*_task())


async def test_versions_list_newest_first_with_paging(engine: AsyncEngine) -> None:
    repo = TaskRepository(engine)
    await repo.create(*_task())
    for v in range(1, 6):
        await repo.commit_version(_version(v), _applied(f"u{v}"))
    await repo.set_metrics("t1", 3, {"accuracy": 0.5})
    page = await repo.versions("t1", limit=2, before=4)
    assert [r.version for r in page] == [3, 2]
    assert page[0].metrics == {"accuracy": 0.5}
