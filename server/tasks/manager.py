"""Task lifecycle: create, load and recover, pause and resume, stop.

Loading a task restores its aggregator from the snapshot stored with its newest
committed version, then lets the worker replay the update queue after that version's
position before the task is marked ready: every acknowledged update is folded once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from client_sdk.bundle import Bundle
from client_sdk.trainer import Trainer
from server.aggregation import (
    AggregationConfig,
    FoldResult,
    ModelSpec,
    make_aggregator,
    restore_aggregator,
)
from server.coordination.queue import START, UpdateQueue
from server.coordination.sessions import SessionStore
from server.errors import BadRequest, NotFound
from server.storage.blobs import LocalBlobStore
from server.storage.ledger import LedgerRepository
from server.storage.records import TaskRecord, VersionRecord
from server.storage.tasks import TaskRepository
from server.tasks import artifacts
from server.tasks.commits import CommitJob, Committer
from server.tasks.config import TaskConfig
from server.tasks.evaluation import Evaluator
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.state import PublishedVersion, TaskState
from server.tasks.worker import Aggregator, TaskWorker

logger = logging.getLogger(__name__)

TASK_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass
class TaskRuntime:
    """A loaded task: its state, and (where this process aggregates it) its workers."""

    state: TaskState
    worker: TaskWorker | None = None
    committer: Committer | None = None
    evaluator: Evaluator | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def buffered(self) -> int:
        if self.worker is None or self.committer is None:
            return 0
        return self.worker.buffered + self.committer.pending_updates

    def knows_update(self, update_id: str) -> bool:
        """Folded into the buffer, a pending commit, or the recent window."""
        return self.worker is not None and self.worker.aggregator.has_folded(update_id)


@dataclass
class CreateTask:
    id: str
    config: TaskConfig
    bundle: Bundle
    eval_set: tuple[Any, Any] | None = None


def worker_aggregator(params: list[Any], config: AggregationConfig) -> Aggregator:
    """The aggregator a worker runs. The API enforces ``max_staleness`` when it
    acknowledges; an acknowledged update must never be refused later by the worker, so
    the worker's copy has no bound."""
    return make_aggregator(params, replace(config, max_staleness=None))


class TaskManager:
    def __init__(
        self,
        *,
        repo: TaskRepository,
        ledger: LedgerRepository,
        blobs: LocalBlobStore,
        queue: UpdateQueue,
        sessions: SessionStore,
        ledger_writer: LedgerWriter,
        exports_dir: Path,
        eval_threads: int = 1,
        aggregate: bool = True,
        on_fold: Callable[[str, FoldResult, float], None] | None = None,
        on_commit: Callable[[str, CommitJob, float], None] | None = None,
    ) -> None:
        self.repo = repo
        self.ledger = ledger
        self.blobs = blobs
        self.queue = queue
        self.sessions = sessions
        self._ledger_writer = ledger_writer
        self._exports_dir = exports_dir
        self._aggregate = aggregate
        self._on_fold = on_fold
        self._on_commit = on_commit
        self._executor = ThreadPoolExecutor(max(1, eval_threads), thread_name_prefix="eval")
        self.runtimes: dict[str, TaskRuntime] = {}

    # -- lookup -------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRuntime:
        runtime = self.runtimes.get(task_id)
        if runtime is None:
            raise NotFound(f"unknown task {task_id!r}", code="unknown_task")
        return runtime

    # -- creation -----------------------------------------------------------------------
    async def export_zoo(self, model: str, optimizer: str) -> Bundle:
        return await artifacts.export_zoo_bundle(model, optimizer, self._exports_dir)

    async def create(self, request: CreateTask) -> TaskRuntime:
        if not TASK_ID.match(request.id):
            raise BadRequest(
                "task id must be 1-64 chars of a-z, 0-9, '-' or '_'", code="bad_task_id"
            )
        if request.id in self.runtimes:
            from server.errors import Conflict

            raise Conflict(f"task {request.id!r} already exists", code="task_exists")
        bundle = request.bundle
        stored = await artifacts.store_bundle(self.blobs, bundle)
        eval_blob = None
        if request.eval_set is not None:
            eval_blob = await self.blobs.put(artifacts.encode_eval_set(*request.eval_set))
        aggregator = worker_aggregator(bundle.initial_params, request.config.aggregation)
        now = time.time()
        record = TaskRecord(
            id=request.id,
            created_at=now,
            status="active",
            mode=request.config.mode,
            config=request.config.to_dict(),
            model=bundle.manifest.model,
            artifacts=stored,
            eval_blob=eval_blob,
            current_version=0,
            fence=0,
        )
        initial = VersionRecord(
            task_id=request.id,
            version=0,
            created_at=now,
            params_blob=stored["params0"],
            snapshot_blob=await self.blobs.put(aggregator.snapshot()),
            queue_position=START,
            fence=0,
            num_updates=0,
        )
        await self.repo.create(record, initial)
        return await self.load(record)

    # -- loading / recovery ---------------------------------------------------------------
    async def load_all(self) -> None:
        for record in await self.repo.all():
            await self.load(record)

    async def load(self, record: TaskRecord) -> TaskRuntime:
        config = TaskConfig.from_dict(record.config)
        bundle = await artifacts.load_bundle(self.blobs, record.artifacts)
        version = await self.repo.version(record.id, record.current_version)
        params_bytes = await self.blobs.get(version.params_blob)
        params = artifacts.decode_version_params(params_bytes, bundle.manifest)
        state = TaskState(
            record=record,
            config=config,
            manifest=bundle.manifest,
            spec=ModelSpec.from_arrays(params),
            published=PublishedVersion(
                version=version.version,
                params_blob=version.params_blob,
                params=params_bytes,
                committed_at=version.created_at,
            ),
            paused=record.status == "paused",
        )
        counts = await self.ledger.counts(record.id)
        state.applied = counts.get("applied", 0)
        state.dropped = counts.get("dropped", 0)
        state.rejected.update(await self.ledger.rejected_by_reason(record.id))
        runtime = TaskRuntime(state)
        if self._aggregate:
            snapshot = await self.blobs.get(version.snapshot_blob)
            aggregator = restore_aggregator(snapshot)
            await self._start(runtime, aggregator, version, bundle, record)
        self.runtimes[record.id] = runtime
        logger.info("task %s loaded at version %d", record.id, version.version)
        return runtime

    async def _start(
        self,
        runtime: TaskRuntime,
        aggregator: Aggregator,
        version: VersionRecord,
        bundle: Bundle,
        record: TaskRecord,
    ) -> None:
        state = runtime.state
        if record.eval_blob is not None and state.config.eval_every > 0:
            x, y = artifacts.decode_eval_set(await self.blobs.get(record.eval_blob))
            runtime.evaluator = Evaluator(
                state,
                Trainer(bundle, threads=1),
                x,
                y,
                self.repo.set_metrics,
                self._executor,
                every=state.config.eval_every,
            )
            last = await self.repo.versions(record.id, limit=1)
            state.last_eval = last[0].metrics if last and last[0].metrics else None

        async def on_commit(job: CommitJob, elapsed: float) -> None:
            if runtime.evaluator is not None:
                runtime.evaluator.request(job.version, job.params_arrays)
            if self._on_commit is not None:
                self._on_commit(record.id, job, elapsed)

        runtime.committer = Committer(
            state, self.repo, self.blobs, self.queue, fence=record.fence, on_commit=on_commit
        )
        on_fold = None
        if self._on_fold is not None:
            hook = self._on_fold

            def on_fold(result: FoldResult, elapsed: float) -> None:
                hook(record.id, result, elapsed)

        runtime.worker = TaskWorker(
            state,
            aggregator,
            self.queue,
            runtime.committer,
            position=version.queue_position,
            record_rejections=self._ledger_writer.add,
            on_fold=on_fold,
        )
        caught_up = asyncio.Event()
        backlog_end = self.queue.last_position(record.id)
        runtime.background = [
            asyncio.create_task(
                runtime.worker.run(caught_up, backlog_end), name=f"worker:{record.id}"
            ),
            asyncio.create_task(runtime.committer.run(), name=f"committer:{record.id}"),
        ]
        if runtime.evaluator is not None:
            runtime.background.append(
                asyncio.create_task(runtime.evaluator.run(), name=f"eval:{record.id}")
            )
        await caught_up.wait()  # ready only once the durable backlog is folded

    # -- control ------------------------------------------------------------------------
    async def set_paused(self, task_id: str, paused: bool) -> TaskRuntime:
        runtime = self.get(task_id)
        await self.repo.set_status(task_id, "paused" if paused else "active")
        runtime.state.paused = paused
        return runtime

    async def drain(self) -> None:
        """Finish pending commits (shutdown)."""
        for runtime in self.runtimes.values():
            if runtime.committer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runtime.committer.drain(), 30)

    async def stop(self) -> None:
        for runtime in self.runtimes.values():
            for task in runtime.background:
                task.cancel()
            for task in runtime.background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._executor.shutdown(wait=True, cancel_futures=True)
