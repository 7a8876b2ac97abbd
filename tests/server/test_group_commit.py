"""The embedded group commit dies at each point between a group's checkpoint and its
versions' commit, and the next start resumes with every acknowledged update applied once
or buffered, checked id by id. Secure aggregation is where it matters: a version is made
from a sealed buffer while later acknowledged updates wait in the open one.

In process, on the real aggregator and checkpoint log; the database is a model that keeps
what a commit transaction keeps (the head's state and the applied ids). "Dying" is a
commit that raises: the leader stops there, and a new leader is built from what is on
disk, as the server does after kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.aggregation import ModelSpec, Release, restore_aggregator
from server.storage import snapshots
from server.storage.records import LedgerEntry, TaskRecord
from server.tasks.checkpoints import CheckpointLog
from server.tasks.commits import CommitJob
from server.tasks.config import TaskConfig
from server.tasks.local import LocalAggregation
from server.tasks.manager import worker_aggregator
from server.tasks.state import PublishedVersion, TaskState

TASK = "t1"
SIZE = 8
CONFIG = {
    "aggregation": {"aggregation_goal": 3, "clip_norm": 5.0, "optimizer": {"name": "fedavg"}},
    "secure_aggregation": {"threshold": 3},
}


class Died(Exception):
    """The process stops here."""


class Database:
    """What the commit transaction keeps: the head's state, the applied ids."""

    def __init__(self, snapshot: bytes, params: list[np.ndarray[Any, Any]]) -> None:
        self.head, self.snapshot, self.params = 0, snapshot, params
        self.applied: dict[str, int] = {}
        self.die: str | None = None  # "before" or "after" the next commit with versions

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None:
        if self.die == "before":
            raise Died
        for job in batch:
            for entry in job.applied:
                assert entry.id not in self.applied, f"{entry.id} applied twice"
                self.applied[entry.id] = job.version
        self.head, self.snapshot = batch[-1].version, snapshot
        self.params = batch[-1].params_arrays
        if self.die == "after":
            raise Died


class ZeroMasks:
    """A mask service whose masks are all zero: a sum of masks is zeros."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def release(self, task_id: str, release: Release, size: int) -> np.ndarray[Any, Any]:
        self.asked.append(release.release_id)
        return np.zeros(size, np.uint32)

    async def forget(self, task_id: str, release_ids: list[str]) -> None:
        return None


def _state(config: TaskConfig) -> TaskState:
    record = TaskRecord(TASK, time.time(), "active", "async", {}, "m", {}, None, 0, 0)
    params = [np.zeros(SIZE, np.float32)]
    return TaskState(
        record=record,
        config=config,
        manifest=None,  # type: ignore[arg-type]  # the leader never reads it
        spec=ModelSpec.from_arrays(params),
        published=PublishedVersion(0, "", b"", time.time()),
    )


def _leader(
    state: TaskState, db: Database, log: CheckpointLog, masks: ZeroMasks | None, **options: Any
) -> Any:
    """A leader built from what is on disk: the database's head and the checkpoints."""
    aggregator = restore_aggregator(snapshots.with_params(snapshots.load(db.snapshot), db.params))
    return LocalAggregation(
        state,
        aggregator,
        db,
        log,
        record_drops=lambda entries: None,
        group_interval_s=0.0,
        releases=masks,
        **options,
    )


def _upload(
    local: LocalAggregation, uid: str, device: str, tensor: np.ndarray[Any, Any] | None = None
) -> Any:
    """Fold one upload; by default a masked one of masks that are zero (q = 1000)."""
    entry = LedgerEntry(
        uid,
        TASK,
        device,
        time.time(),
        "accepted",
        base_version=local.aggregator.params_version,
        num_examples=10,
    )
    _, group = local.fold(
        entry, [np.full(SIZE, 1000, np.uint32) if tensor is None else tensor], time.time()
    )
    return group


async def _acknowledged(group: Any) -> bool:
    """Whether the group's acknowledgements are released (False: the leader died)."""
    try:
        await asyncio.wait_for(group.wait(), 10)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("die", ["before", "after"])
async def test_dying_around_a_release_commit_keeps_every_acknowledged_update(
    tmp_path: Path, die: str
) -> None:
    config = TaskConfig.from_dict(CONFIG)
    state = _state(config)
    first = worker_aggregator([np.zeros(SIZE, np.float32)], config)
    db = Database(snapshots.dump(first.state(buffer=False, params=False)), first.params)
    masks = ZeroMasks()
    log = CheckpointLog(tmp_path, "always")
    local = _leader(state, db, log, masks)
    db.die = die  # the first commit with versions (version 1) dies around its commit
    run = asyncio.create_task(local.run())

    acked: list[str] = []
    # three updates seal a buffer; x waits in the open one and is acknowledged with the
    # checkpoint that holds the sealed buffer, before the release makes version 1
    groups = [_upload(local, f"u{i}", f"d{i}") for i in range(3)]
    groups.append(_upload(local, "x", "d3"))
    for uid, group in zip(["u0", "u1", "u2", "x"], groups, strict=True):
        assert await _acknowledged(group)
        acked.append(uid)
    with pytest.raises(Died):
        await asyncio.wait_for(run, 10)
    log.close()
    assert masks.asked, "the sealed buffer was released"

    # a new process: the database as committed, the checkpoint slots as written
    log = CheckpointLog(tmp_path, "always")
    db.die = None
    restarted = _leader(state, db, log, masks)
    restarted.resume()
    run = asyncio.create_task(restarted.run())
    while db.head < 1:  # a release left pending is asked again, and answered the same
        await asyncio.sleep(0.01)
    run.cancel()
    log.close()

    applied, buffered = set(db.applied), set(restarted.pending)
    missing = [u for u in acked if u not in applied and u not in buffered]
    assert missing == [], f"acknowledged but neither applied nor buffered: {missing}"
    assert not applied & buffered
    assert {db.applied[u] for u in ["u0", "u1", "u2"]} == {1}
    assert "x" in buffered


@pytest.mark.parametrize("die", ["before", "after"])
async def test_acknowledged_before_their_versions_commit_and_committed_after_a_crash(
    tmp_path: Path, die: str
) -> None:
    """A group is acknowledged once its checkpoint is durable; its versions commit
    later. Dying around that commit, the restart commits what the database lacks from
    the checkpoint: every acknowledged id in exactly one version or the buffer."""
    config = TaskConfig.from_dict({"aggregation": {"aggregation_goal": 2}})
    state = _state(config)
    first = worker_aggregator([np.zeros(SIZE, np.float32)], config)
    db = Database(snapshots.dump(first.state(buffer=False, params=False)), first.params)
    log = CheckpointLog(tmp_path, "always")

    def leader() -> LocalAggregation:  # after the first, no commit until shutdown
        return _leader(state, db, log, None, commit_interval_s=3600.0)

    local = leader()
    db.die = die
    ids = [f"u{i}" for i in range(5)]  # versions 1 and 2, u4 left in the buffer
    groups = [
        _upload(local, uid, f"d{i}", np.full(SIZE, i + 1, np.float32)) for i, uid in enumerate(ids)
    ]
    run = asyncio.create_task(local.run())  # one group: its checkpoint, then the commit
    for group in groups:
        assert await _acknowledged(group)
    with pytest.raises(Died):
        await asyncio.wait_for(run, 10)
    log.close()
    committed_before = dict(db.applied)
    assert (db.head >= 1) == (die == "after")

    log = CheckpointLog(tmp_path, "always")
    db.die = None
    local = leader()
    assert local.resume() == 1
    assert local.aggregator.params_version == 2
    await local.drain()  # commits what the checkpoint held beyond the database's head
    log.close()

    assert db.head == 2
    applied, buffered = set(db.applied), set(local.pending)
    assert applied == {"u0", "u1", "u2", "u3"} and buffered == {"u4"}
    assert {db.applied[u] for u in ["u0", "u1"]} == {1}
    assert {db.applied[u] for u in ["u2", "u3"]} == {2}
    assert all(db.applied[u] == v for u, v in committed_before.items())
    # the replayed head carries the checkpoint's parameters: 1 + 2 and 3 + 4, averaged
    assert np.allclose(db.params[0], np.full(SIZE, 1.5 + 3.5, np.float32))


async def test_a_checkpoint_of_the_previous_release_resumes_its_buffer(tmp_path: Path) -> None:
    """An upgraded server finds the buffers-only record the previous release wrote (at
    the committed head) and resumes it onto the head's state."""
    config = TaskConfig.from_dict({"aggregation": {"aggregation_goal": 4}})
    state = _state(config)
    first = worker_aggregator([np.zeros(SIZE, np.float32)], config)
    db = Database(snapshots.dump(first.state(buffer=False, params=False)), first.params)
    first.fold("old", [np.full(SIZE, 2.0, np.float32)], 10, 0, time.time(), source="d")
    entry = LedgerEntry("old", TASK, "d", 1.0, "accepted", base_version=0, num_examples=10)
    buffers = first.buffer_state()
    total = buffers["buffer"].pop("total")
    buffers["buffer"]["total"] = None
    log = CheckpointLog(tmp_path, "always")
    meta = {"task": TASK, "version": 0, "state": snapshots.encode(buffers)}
    await log.write({**meta, "entries": [entry.as_row()]}, total.tobytes())

    aggregator = restore_aggregator(snapshots.with_params(snapshots.load(db.snapshot), db.params))
    local = LocalAggregation(
        state, aggregator, db, log, record_drops=lambda entries: None, group_interval_s=0.0
    )
    assert local.resume() == 1
    log.close()
    assert set(local.pending) == {"old"} and local.aggregator.buffered == 1
    np.testing.assert_array_equal(local.aggregator.buffer_state()["buffer"]["total"], total)


async def test_with_every_version_committed_a_checkpoint_holds_the_buffers_only(
    tmp_path: Path,
) -> None:
    config = TaskConfig.from_dict({"aggregation": {"aggregation_goal": 2}})
    state = _state(config)
    first = worker_aggregator([np.zeros(SIZE, np.float32)], config)
    db = Database(snapshots.dump(first.state(buffer=False, params=False)), first.params)
    log = CheckpointLog(tmp_path, "always")
    local = _leader(state, db, log, None, commit_interval_s=0.0)
    run = asyncio.create_task(local.run())
    for uid in ("a", "b"):  # version 1
        assert await _acknowledged(_upload(local, uid, uid, np.ones(SIZE, np.float32)))
    while db.head < 1:
        await asyncio.sleep(0.01)
    assert await _acknowledged(_upload(local, "c", "c", np.ones(SIZE, np.float32)))
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    newest = log.latest(TASK)
    assert newest is not None and newest.meta["whole"] is False and newest.meta["jobs"] == []
    log.close()

    log = CheckpointLog(tmp_path, "always")
    restarted = _leader(state, db, log, None)
    assert restarted.resume() == 1
    log.close()
    assert set(restarted.pending) == {"c"} and restarted.aggregator.params_version == 1
    assert set(db.applied) == {"a", "b"}


class AwayDatabase(Database):
    """A database that takes no commit until it is back."""

    def __init__(self, snapshot: bytes, params: list[np.ndarray[Any, Any]]) -> None:
        super().__init__(snapshot, params)
        self.back = asyncio.Event()
        self.waiting = 0

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None:
        self.waiting += 1
        await self.back.wait()
        await super().commit(batch, snapshot)


async def test_with_the_database_away_acknowledgements_wait_past_the_row_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints carry every uncommitted version's rows: past MAX_UNCOMMITTED_ROWS
    waiting for the database, a new group is neither cut nor acknowledged until the
    commits go through; then every id is applied once."""
    monkeypatch.setattr("server.tasks.local.MAX_UNCOMMITTED_ROWS", 3)
    config = TaskConfig.from_dict({"aggregation": {"aggregation_goal": 2}})
    state = _state(config)
    first = worker_aggregator([np.zeros(SIZE, np.float32)], config)
    db = AwayDatabase(snapshots.dump(first.state(buffer=False, params=False)), first.params)
    log = CheckpointLog(tmp_path, "always")
    local = _leader(state, db, log, None, commit_interval_s=0.0)
    run = asyncio.create_task(local.run())

    def fold(ids: range) -> Any:
        groups = [_upload(local, f"u{i}", f"d{i}", np.ones(SIZE, np.float32)) for i in ids]
        assert len({id(g) for g in groups}) == 1  # folded together: one group
        return groups[0]

    assert await _acknowledged(fold(range(4)))  # versions 1-2: their commit now waits
    while db.waiting == 0:
        await asyncio.sleep(0.01)
    assert await _acknowledged(fold(range(4, 8)))  # versions 3-4: 4 rows wait, above 3
    held = fold(range(8, 9))
    with pytest.raises(TimeoutError):  # held while the uncommitted rows are past the bound
        await asyncio.wait_for(held.wait(), 0.3)
    assert db.applied == {}

    db.back.set()
    assert await _acknowledged(held)
    await local.drain()
    run.cancel()
    log.close()
    assert db.applied == {f"u{i}": 1 + i // 2 for i in range(8)}
    assert set(local.pending) == {"u8"}
