"""The ledger writer never drops a row: a batch the database refuses for one row's value is
split until that row is found; the row is kept stripped in the ledger and whole in the
quarantine file; a database that is not there yet keeps the batch pending."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import StorageError
from server.settings import Settings
from server.storage.database import create_engine, upgrade
from server.storage.ledger import LedgerRepository
from server.storage.records import LedgerEntry, TaskRecord, VersionRecord
from server.storage.tasks import TaskRepository
from server.tasks.ledgerwriter import LedgerWriter

MIGRATIONS = Settings().migrations_dir


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await upgrade(eng, MIGRATIONS)
    yield eng
    await eng.dispose()


async def _tasks(engine: AsyncEngine) -> None:
    repo = TaskRepository(engine)
    for task_id in ("t1", "t2"):
        task = TaskRecord(task_id, 1.0, "active", "async", {}, "mlp", {}, None, 0, 0)
        await repo.create(task, VersionRecord(task_id, 0, 1.0, "p0", "s0", "0", 0, 0))


def _rows(n: int, bad: set[int]) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            f"u{i}",
            "t1" if i % 2 else "t2",
            f"d{i}",
            float(i),
            "rejected",
            "stale",
            base_version=2**70 if i in bad else i,
            num_examples=10,
        )
        for i in range(n)
    ]


async def test_a_refused_row_is_isolated_and_kept(engine: AsyncEngine, tmp_path: Path) -> None:
    await _tasks(engine)
    ledger = LedgerRepository(engine)
    quarantine = tmp_path / "q.jsonl"
    seen: list[str] = []
    writer = LedgerWriter(
        ledger, batch=64, quarantine=quarantine, on_quarantine=lambda e: seen.append(e.id)
    )
    bad = {5, 37, 38}
    entries = _rows(100, bad)
    writer.add(entries)
    await writer.flush()

    stored = {e.id: e for task in ("t1", "t2") for e in await ledger.entries(task)}
    assert set(stored) == {e.id for e in entries}  # every id, other tasks' rows included
    for i, entry in enumerate(entries):
        row = stored[entry.id]
        assert (row.task_id, row.device_id, row.status, row.reason) == (
            entry.task_id,
            entry.device_id,
            "rejected",
            "stale",
        )
        assert row.base_version == (None if i in bad else i)
        assert row.num_examples == (None if i in bad else 10)
    assert sorted(seen) == sorted(f"u{i}" for i in bad)
    kept = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert sorted(k["id"] for k in kept) == sorted(seen)
    assert {k["base_version"] for k in kept} == {2**70}  # whole, as it was refused


async def test_rows_wait_for_a_database_that_is_not_ready(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'late.db'}")
    try:
        ledger = LedgerRepository(eng)
        quarantine = tmp_path / "q.jsonl"
        writer = LedgerWriter(ledger, batch=8, quarantine=quarantine)
        entries = _rows(20, set())
        writer.add(entries)
        with pytest.raises(StorageError):
            await writer.flush()  # no schema yet: nothing written, nothing quarantined
        assert not quarantine.exists()
        await upgrade(eng, MIGRATIONS)
        await _tasks(eng)
        await writer.flush()
        stored = {e.id for task in ("t1", "t2") for e in await ledger.entries(task)}
        assert stored == {e.id for e in entries}
    finally:
        await eng.dispose()


async def test_a_row_no_stripping_can_save_stays_in_the_file(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await _tasks(engine)
    ledger = LedgerRepository(engine)
    quarantine = tmp_path / "q.jsonl"
    writer = LedgerWriter(ledger, quarantine=quarantine)
    orphan = LedgerEntry("orphan", "no-such-task", "d", 1.0, "rejected", "unknown_task")
    writer.add([*_rows(4, set()), orphan])
    await writer.flush()
    stored = {e.id for task in ("t1", "t2") for e in await ledger.entries(task)}
    assert stored == {"u0", "u1", "u2", "u3"}
    assert [json.loads(line)["id"] for line in quarantine.read_text().splitlines()] == ["orphan"]
