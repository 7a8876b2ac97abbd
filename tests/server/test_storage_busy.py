"""An overloaded database is a 503 to retry, not a 500: a pool with no free connection
in time (a 10,000-device enrollment on a starved machine answered 1,477 500s), and
SQLite's lock timeout."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from server.errors import DatabaseBusy, StorageError
from server.settings import Settings
from server.storage.database import create_engine, upgrade
from server.storage.devices import DeviceRepository
from server.storage.records import DeviceRecord

MIGRATIONS = Settings().migrations_dir


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


def _device(name: str) -> DeviceRecord:
    return DeviceRecord(id=name, created_at=0.0)


async def test_no_pooled_connection_in_time_is_database_busy(database_url: str) -> None:
    await _migrate(database_url)
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    repo = DeviceRepository(engine)
    try:
        async with engine.connect():  # the pool's only connection, held
            with pytest.raises(DatabaseBusy) as busy:
                await repo.create(_device("d1"))
        await repo.create(_device("d1"))  # a moment later it goes through
        revoked = await repo.revoked_ids()
    finally:
        await engine.dispose()

    assert busy.value.status == 503 and busy.value.code == "database_busy"
    assert revoked == set()


async def test_a_sqlite_lock_timeout_is_database_busy(tmp_path: Path) -> None:
    path = tmp_path / "asyncfl.db"
    url = f"sqlite+aiosqlite:///{path}"
    await _migrate(url)
    engine = create_async_engine(url, connect_args={"timeout": 0.1})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(DatabaseBusy):
            await DeviceRepository(engine).create(_device("d1"))
        holder.execute("ROLLBACK")
        await DeviceRepository(engine).create(_device("d1"))
    finally:
        holder.close()
        await engine.dispose()


async def test_other_database_failures_stay_storage_errors(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no schema
    try:
        with pytest.raises(StorageError) as failed:
            await DeviceRepository(engine).revoked_ids()
    finally:
        await engine.dispose()
    assert not isinstance(failed.value, DatabaseBusy)
    assert failed.value.status == 500
