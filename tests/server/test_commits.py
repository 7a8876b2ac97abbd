"""The committer: versions stepped while a commit is in flight land in one transaction,
and only the newest one's snapshot is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from client_sdk.bundle import Manifest, TensorSpec
from client_sdk.wire import encode_tensors, pack
from server.aggregation import ModelSpec
from server.errors import NotFound
from server.settings import Settings
from server.storage.blobs import LocalBlobStore
from server.storage.database import create_engine, upgrade
from server.storage.ledger import LedgerRepository
from server.storage.records import LedgerEntry, TaskRecord, VersionRecord
from server.storage.tasks import TaskRepository
from server.tasks import commits
from server.tasks.commits import CommitJob, Committer
from server.tasks.config import TaskConfig
from server.tasks.state import PublishedVersion, TaskState


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    await upgrade(eng, Settings().migrations_dir)
    yield eng
    await eng.dispose()


def _state() -> TaskState:
    spec = TensorSpec("w", (2,), "float32")
    manifest = Manifest(1, "tiny", "classification", (spec,), spec, spec, "sgd", {}, (), "ce", 17,
                        {}, "", "", "")  # fmt: skip
    record = TaskRecord("t1", 1.0, "active", "async", {}, "tiny", {}, None, 0, 0)
    published = PublishedVersion(0, "p0", b"", 1.0)
    return TaskState(record, TaskConfig(), manifest, ModelSpec.of([[2]]), published)


def _job(version: int) -> CommitJob:
    params = [np.full(2, version, np.float32)]
    applied = [LedgerEntry(f"u{version}.{i}", "t1", "d", 1.0, "applied") for i in range(3)]
    return CommitJob("t1", version, str(version * 3), applied, 0.5, params)


async def _committer(engine: AsyncEngine, tmp_path: Path) -> tuple[Committer, TaskState]:
    await TaskRepository(engine).create(
        TaskRecord("t1", 1.0, "active", "async", {}, "tiny", {}, None, 0, 0),
        VersionRecord("t1", 0, 1.0, "p0", "s0", "0", 0, 0),
    )
    state = _state()
    committer = Committer(
        state, TaskRepository(engine), LocalBlobStore(tmp_path / "blobs"), None, fence=0
    )
    return committer, state


async def _commit_all(committer: Committer, engine: AsyncEngine, jobs: int) -> list[Any]:
    """Submit versions 1..jobs before the committer runs; returns the DB transactions."""
    transactions: list[Any] = []
    event.listen(engine.sync_engine, "commit", transactions.append)
    for version in range(1, jobs + 1):
        committer.submit(_job(version), f"snapshot {version}".encode())
    runner = asyncio.create_task(committer.run())
    await asyncio.wait_for(committer.drain(), 10)
    runner.cancel()
    return transactions


async def test_versions_queued_behind_a_commit_land_in_one_transaction(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    repo, ledger = TaskRepository(engine), LedgerRepository(engine)
    committer, state = await _committer(engine, tmp_path)
    blobs = LocalBlobStore(tmp_path / "blobs")

    transactions = await _commit_all(committer, engine, 5)

    assert len(transactions) == 1
    assert (await repo.get("t1")).current_version == 5
    assert state.published.version == 5 and state.applied == 15
    assert committer.pending_updates == 0
    rows = [await repo.version("t1", version) for version in range(1, 6)]
    assert [row.queue_position for row in rows] == ["3", "6", "9", "12", "15"]
    # only the head was published, so only its parameters are kept; the rest say so
    assert [row.params_blob for row in rows[:-1]] == [None] * 4
    assert rows[-1].params_blob == state.published.params_blob
    head = await blobs.get(await repo.params_blob("t1", 5))
    assert head == state.published.params == pack(encode_tensors([np.full(2, 5, np.float32)]))
    for version in range(1, 5):
        with pytest.raises(NotFound) as refused:
            await repo.params_blob("t1", version)
        assert refused.value.code == "params_not_kept"
    # only the head's snapshot is kept: restoring never reads another
    assert [row.snapshot_blob for row in rows[:-1]] == [None] * 4
    assert rows[-1].snapshot_blob is not None
    assert await blobs.get(rows[-1].snapshot_blob) == b"snapshot 5"
    applied = {e.id: e.applied_version for e in await ledger.entries("t1")}
    assert applied == {f"u{v}.{i}": v for v in range(1, 6) for i in range(3)}


async def test_a_backlog_is_cut_into_batches_of_bounded_rows_each_ending_with_a_snapshot(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commits, "BATCH_ROWS", 6)  # two 3-row versions per batch
    repo = TaskRepository(engine)
    committer, _ = await _committer(engine, tmp_path)

    transactions = await _commit_all(committer, engine, 5)

    assert len(transactions) == 3  # versions 1-2, 3-4, 5
    rows = [await repo.version("t1", version) for version in range(1, 6)]
    kept = [row.version for row in rows if row.snapshot_blob is not None]
    assert kept == [2, 4, 5]
    assert (await repo.get("t1")).current_version == 5
