"""Committing versions: blobs first, then one fenced database transaction, then publish.

Commits of a task run one at a time, in version order. The embedded leader calls
:meth:`Committer.commit` from its group commit (a group's versions are committed before
its acknowledgements are released); the distributed leader submits them
(:meth:`Committer.submit`) and :meth:`Committer.run` commits them off the merge path,
while the next partials are merged. Versions stepped while a commit was in flight are
committed together (up to ``BATCH_ROWS`` ledger rows): one trip for their blobs, one
transaction, and only the newest one's aggregator state written (restoring reads the
head's). A commit that fails on a storage error is retried with backoff (the version
is not half-written: the blobs are content-addressed and the rows and the ledger
change in one transaction). A commit refused as stale means another leader
owns the task: the committer stops.

Only the newest version of a batch is ever published (the others are superseded before
any device can be handed them), so only its parameters are encoded and written; the
older versions' rows say so with no params blob (their ledger rows, counts and metrics
stay). Every version a device or an operator was ever shown keeps its parameters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client_sdk.wire import encode_tensors, pack
from server.coordination.partials import RedisPartialQueue
from server.errors import AsyncflError, NotFound, StorageError
from server.storage.blobs import LocalBlobStore
from server.storage.records import LedgerEntry, VersionRecord
from server.storage.tasks import StaleCommit, TaskRepository
from server.tasks.state import PublishedVersion, TaskState

logger = logging.getLogger(__name__)

# Ledger rows per group commit: SQLAlchemy builds a statement's parameters on the event
# loop (~5 us a row), so a batch's rows bound how long a commit holds the loop.
BATCH_ROWS = 2048


@dataclass(frozen=True)
class CommitJob:
    task_id: str
    version: int
    position: str  # queue position of the last update this version consumed
    applied: list[LedgerEntry]
    mean_staleness: float | None
    params_arrays: list[np.ndarray[Any, Any]] = field(compare=False)  # the version's own copy
    stepped_at: float = field(default_factory=time.time)
    release_id: str | None = None  # secure aggregation: the release that made it


def wire_params(job: CommitJob) -> bytes:
    """The version's parameters as clients download them (msgpack wire tensors)."""
    return pack(encode_tensors(job.params_arrays))


class LeadershipLost(AsyncflError):
    code = "leadership_lost"
    status = 409


class Committer:
    def __init__(
        self,
        state: TaskState,
        repo: TaskRepository,
        blobs: LocalBlobStore,
        queue: RedisPartialQueue | None,
        *,
        fence: int,
        on_commit: Callable[[CommitJob, float], Awaitable[None]] | None = None,
        on_stale: Callable[[], None] | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._state = state
        self._repo = repo
        self._blobs = blobs
        self._queue = queue
        self._fence = fence
        self._on_commit = on_commit
        self._on_stale = on_stale
        self._max_backoff_s = max_backoff_s
        self._jobs: asyncio.Queue[CommitJob] = asyncio.Queue()
        # snapshots of queued jobs that will end a batch (see submit), by version
        self._snapshots: dict[int, bytes] = {}
        self._newest_version = -1
        self._open_rows = 0  # ledger rows of the batch the newest queued job is in
        self._pending_updates = 0
        self.failures = 0

    @property
    def pending_updates(self) -> int:
        """Updates folded into versions that are stepped but not yet committed."""
        return self._pending_updates

    def submit(self, job: CommitJob, snapshot: bytes) -> None:
        """Queue ``job``, with the aggregator's ``snapshot`` right after its step, for the
        next group commit.

        Queued jobs are cut, in order, into batches of up to ``BATCH_ROWS`` ledger rows;
        a batch writes only its last job's snapshot, so a queued job keeps its snapshot
        only while it may end a batch: while it is the newest, or when the rows after
        it start a new batch. A backlog of versions then holds one snapshot per batch,
        not one (~400 KB) per version, and :meth:`run` ends each batch at the first
        job that still has one."""
        rows = max(1, len(job.applied))
        if self._jobs.qsize() and self._open_rows + rows <= BATCH_ROWS:
            self._snapshots.pop(self._newest_version, None)  # superseded in its batch
            self._open_rows += rows
        else:
            self._open_rows = rows
        self._snapshots[job.version] = snapshot
        self._newest_version = job.version
        self._pending_updates += len(job.applied)
        self._jobs.put_nowait(job)

    async def drain(self) -> None:
        await self._jobs.join()

    async def run(self) -> None:
        while True:
            batch = [await self._jobs.get()]
            while batch[-1].version not in self._snapshots:  # the newest job has one
                batch.append(self._jobs.get_nowait())
            snapshot = self._snapshots.pop(batch[-1].version)
            try:
                # A commit in flight finishes even if the task is cancelled meanwhile.
                await asyncio.shield(self._commit_with_retry(batch, snapshot))
            finally:
                for _ in batch:
                    self._jobs.task_done()

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None:
        """Commit consecutive versions now (retrying storage errors with backoff) and
        publish them; ``snapshot`` is the state of the last, the only one kept. Raises
        :class:`LeadershipLost` when a newer leader holds the task's fence."""
        self._pending_updates += sum(len(job.applied) for job in batch)
        await self._commit_with_retry(batch, snapshot)

    async def _commit_with_retry(self, batch: list[CommitJob], snapshot: bytes) -> None:
        backoff = 0.1
        last = batch[-1]
        params = wire_params(last)
        while True:
            started = time.perf_counter()
            try:
                params_blob = await self._commit(batch, params, snapshot)
            except StaleCommit as exc:
                if not await self._already_committed(last):
                    logger.warning("task %s: %s", last.task_id, exc)
                    if self._on_stale is not None:
                        self._on_stale()
                    raise LeadershipLost(str(exc)) from exc
                # our own earlier attempt went through: the batch is one transaction
                params_blob = await self._repo.params_blob(last.task_id, last.version)
            except StorageError as exc:
                self.failures += 1
                logger.warning(
                    "task %s: commit of versions %d-%d failed (%s); retrying in %.1fs",
                    last.task_id,
                    batch[0].version,
                    last.version,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff_s, backoff * 2)
                continue
            break
        elapsed = time.perf_counter() - started
        self._publish(batch, params_blob, params)
        if self._queue is not None:
            try:
                await self._queue.trim(last.task_id, last.position)
            except AsyncflError as exc:  # housekeeping; the next commit retries it
                logger.warning("task %s: cannot trim the update queue: %s", last.task_id, exc)
        if self._on_commit is not None:
            for job in batch:
                await self._on_commit(job, elapsed)

    async def _commit(self, batch: list[CommitJob], params: bytes, snapshot: bytes) -> str:
        """Write the newest version's blobs (``params`` and ``snapshot``, the only ones
        kept: see the module's docstring), then the batch's versions in one transaction;
        returns the params blob."""
        params_blob, snapshot_blob = await self._blobs.put_many([params, snapshot])
        older: list[str | None] = [None] * (len(batch) - 1)
        await self._repo.commit_versions(
            [
                (
                    VersionRecord(
                        task_id=job.task_id,
                        version=job.version,
                        created_at=job.stepped_at,
                        params_blob=kept_params,
                        snapshot_blob=kept_snapshot,
                        queue_position=job.position,
                        fence=self._fence,
                        num_updates=len(job.applied),
                        mean_staleness=job.mean_staleness,
                    ),
                    job.applied,
                )
                for job, kept_params, kept_snapshot in zip(
                    batch, [*older, params_blob], [*older, snapshot_blob], strict=True
                )
            ]
        )
        return params_blob

    async def _already_committed(self, job: CommitJob) -> bool:
        """After an ambiguous failure: did our own earlier attempt commit this version?"""
        try:
            row = await self._repo.version(job.task_id, job.version)
        except NotFound:
            return False
        return row.fence == self._fence and row.queue_position == job.position

    def _publish(self, batch: list[CommitJob], params_blob: str, params: bytes) -> None:
        # moved from pending to applied in one step: status never counts an update twice
        applied = sum(len(job.applied) for job in batch)
        self._pending_updates -= applied
        self._state.applied += applied
        self._state.publish(
            PublishedVersion(
                version=batch[-1].version,
                params_blob=params_blob,
                params=params,
                committed_at=time.time(),
            )
        )
