"""Committing versions: blobs first, then one fenced database transaction, then publish.

Commits of a task run one at a time, in version order, off the fold path: the worker
keeps folding into the next buffer while a version is being written. A commit that
fails on a storage error is retried with backoff (the version is not half-written: the
blobs are content-addressed and the row and the ledger change in one transaction). A
commit refused as stale means another leader owns the task: the committer stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.coordination.queue import UpdateQueue
from server.errors import AsyncflError, NotFound, StorageError
from server.storage.blobs import LocalBlobStore
from server.storage.records import LedgerEntry, VersionRecord
from server.storage.tasks import StaleCommit, TaskRepository
from server.tasks.state import PublishedVersion, TaskState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitJob:
    task_id: str
    version: int
    params: bytes  # msgpack wire tensors, as clients download them
    snapshot: bytes  # aggregator state right after the step
    position: str  # queue position of the last update this version consumed
    applied: list[LedgerEntry]
    mean_staleness: float | None
    params_arrays: list[np.ndarray[Any, Any]] = field(compare=False)
    stepped_at: float = field(default_factory=time.time)


class LeadershipLost(AsyncflError):
    code = "leadership_lost"
    status = 409


class Committer:
    def __init__(
        self,
        state: TaskState,
        repo: TaskRepository,
        blobs: LocalBlobStore,
        queue: UpdateQueue,
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
        self._pending_updates = 0
        self.failures = 0

    @property
    def pending_updates(self) -> int:
        """Updates folded into versions that are stepped but not yet committed."""
        return self._pending_updates

    def submit(self, job: CommitJob) -> None:
        self._pending_updates += len(job.applied)
        self._jobs.put_nowait(job)

    async def drain(self) -> None:
        await self._jobs.join()

    async def run(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                # A commit in flight finishes even if the task is cancelled meanwhile.
                await asyncio.shield(self._commit_with_retry(job))
            finally:
                self._jobs.task_done()

    async def _commit_with_retry(self, job: CommitJob) -> None:
        backoff = 0.1
        while True:
            started = time.perf_counter()
            try:
                params_blob = await self._commit(job)
            except StaleCommit as exc:
                if not await self._already_committed(job):
                    logger.warning("task %s: %s", job.task_id, exc)
                    if self._on_stale is not None:
                        self._on_stale()
                    raise LeadershipLost(str(exc)) from exc
                params_blob = (await self._repo.version(job.task_id, job.version)).params_blob
            except StorageError as exc:
                self.failures += 1
                logger.warning(
                    "task %s: commit of version %d failed (%s); retrying in %.1fs",
                    job.task_id,
                    job.version,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff_s, backoff * 2)
                continue
            break
        elapsed = time.perf_counter() - started
        self._publish(job, params_blob)
        try:
            await self._queue.trim(job.task_id, job.position)
        except AsyncflError as exc:  # trimming is housekeeping; the next commit retries it
            logger.warning("task %s: cannot trim the update queue: %s", job.task_id, exc)
        if self._on_commit is not None:
            await self._on_commit(job, elapsed)

    async def _commit(self, job: CommitJob) -> str:
        params_blob = await self._blobs.put(job.params)
        snapshot_blob = await self._blobs.put(job.snapshot)
        record = VersionRecord(
            task_id=job.task_id,
            version=job.version,
            created_at=job.stepped_at,
            params_blob=params_blob,
            snapshot_blob=snapshot_blob,
            queue_position=job.position,
            fence=self._fence,
            num_updates=len(job.applied),
            mean_staleness=job.mean_staleness,
        )
        await self._repo.commit_version(record, job.applied)
        return params_blob

    async def _already_committed(self, job: CommitJob) -> bool:
        """After an ambiguous failure: did our own earlier attempt commit this version?"""
        try:
            row = await self._repo.version(job.task_id, job.version)
        except NotFound:
            return False
        return row.fence == self._fence and row.queue_position == job.position

    def _publish(self, job: CommitJob, params_blob: str) -> None:
        # moved from pending to applied in one step: status never counts an update twice
        self._pending_updates -= len(job.applied)
        self._state.applied += len(job.applied)
        self._state.publish(
            PublishedVersion(
                version=job.version,
                params_blob=params_blob,
                params=job.params,
                committed_at=time.time(),
            )
        )
