"""Task lifecycle: create, load, refresh, pause and resume; start and stop aggregating.

Every process holds a :class:`TaskState` per task (what check-in and upload need).
A process that aggregates a task (it holds the task's lease, see
:mod:`server.tasks.leadership`) also runs its worker, committer and evaluator: starting
claims a new fencing token in the database, then restores the aggregator from the
snapshot of the newest committed version and replays the update queue after that
version's position before it reports ready, so every acknowledged update is folded once.
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
from server.coordination.events import EventBus
from server.coordination.queue import START, UpdateQueue
from server.coordination.sessions import SessionStore
from server.errors import BadRequest, Conflict, NotFound, StorageError
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

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
STOP_DRAIN_S = 10.0


@dataclass
class TaskRuntime:
    """A loaded task: its state and, while this process leads it, its workers."""

    state: TaskState
    worker: TaskWorker | None = None
    committer: Committer | None = None
    evaluator: Evaluator | None = None
    fence: int = 0
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def leading(self) -> bool:
        return self.worker is not None

    def buffered(self) -> int:
        """Updates folded, or stepped into a version not yet committed (leader only)."""
        if self.worker is None or self.committer is None:
            return 0
        return self.worker.buffered + self.committer.pending_updates

    def knows_update(self, update_id: str) -> bool:
        """Folded into the buffer, a pending commit, or the recent window."""
        return self.worker is not None and self.worker.aggregator.has_folded(update_id)

    def failure(self) -> BaseException | None:
        """Why a background task of the leader stopped, if one did."""
        for task in self.background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None


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
        events: EventBus,
        ledger_writer: LedgerWriter,
        exports_dir: Path,
        eval_threads: int = 1,
        on_fold: Callable[[str, FoldResult, float], None] | None = None,
        on_commit: Callable[[str, CommitJob, float], None] | None = None,
        on_stale_commit: Callable[[str], None] | None = None,
    ) -> None:
        self.repo = repo
        self.ledger = ledger
        self.blobs = blobs
        self.queue = queue
        self.sessions = sessions
        self.events = events
        self._ledger_writer = ledger_writer
        self._exports_dir = exports_dir
        self._on_fold = on_fold
        self._on_commit = on_commit
        self._on_stale_commit = on_stale_commit
        self._executor = ThreadPoolExecutor(max(1, eval_threads), thread_name_prefix="eval")
        self.runtimes: dict[str, TaskRuntime] = {}
        self._bundles: dict[str, Bundle] = {}

    # -- lookup ---------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRuntime:
        runtime = self.runtimes.get(task_id)
        if runtime is None:
            raise NotFound(f"unknown task {task_id!r}", code="unknown_task")
        return runtime

    # -- creation -------------------------------------------------------------------------
    async def export_zoo(self, model: str, optimizer: str) -> Bundle:
        return await artifacts.export_zoo_bundle(model, optimizer, self._exports_dir)

    async def create(self, request: CreateTask) -> TaskRuntime:
        if not TASK_ID.match(request.id):
            raise BadRequest(
                "task id must be 1-64 chars of a-z, 0-9, '-' or '_'", code="bad_task_id"
            )
        if request.id in self.runtimes:
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
        runtime = await self.load(record)
        await self.events.publish({"type": "task", "task": request.id})
        return runtime

    # -- loading and refreshing (every process) -------------------------------------------
    async def load_all(self) -> None:
        for record in await self.repo.all():
            if record.id not in self.runtimes:
                await self.load(record)

    async def load(self, record: TaskRecord) -> TaskRuntime:
        config = TaskConfig.from_dict(record.config)
        bundle = await self._bundle(record)
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
        await self._load_counts(state)
        runtime = TaskRuntime(state)
        self.runtimes[record.id] = runtime
        logger.info("task %s loaded at version %d", record.id, version.version)
        return runtime

    async def refresh(self, task_id: str) -> None:
        """Catch up with the database: a new task, a new version, pause or resume."""
        runtime = self.runtimes.get(task_id)
        record = await self.repo.get(task_id)
        if runtime is None:
            await self.load(record)
            return
        state = runtime.state
        state.paused = record.status == "paused"
        if runtime.leading or record.current_version <= state.version:
            return
        version = await self.repo.version(task_id, record.current_version)
        state.publish(
            PublishedVersion(
                version=version.version,
                params_blob=version.params_blob,
                params=await self.blobs.get(version.params_blob),
                committed_at=version.created_at,
            )
        )
        await self._load_counts(state)

    async def _load_counts(self, state: TaskState) -> None:
        counts = await self.ledger.counts(state.id)
        state.applied = counts.get("applied", 0)
        state.dropped = counts.get("dropped", 0)
        state.rejected.clear()
        state.rejected.update(await self.ledger.rejected_by_reason(state.id))

    async def _bundle(self, record: TaskRecord) -> Bundle:
        bundle = self._bundles.get(record.id)
        if bundle is None:
            bundle = await artifacts.load_bundle(self.blobs, record.artifacts)
            self._bundles[record.id] = bundle
        return bundle

    # -- aggregation (the leader only) -----------------------------------------------------
    async def start_aggregating(self, task_id: str) -> TaskRuntime:
        """Lead the task: claim a fence, restore the newest version, replay the queue."""
        runtime = self.get(task_id)
        if runtime.leading:
            return runtime
        fence = await self.repo.claim_fence(task_id)
        record = await self.repo.get(task_id)
        await self.refresh(task_id)
        version = await self.repo.version(task_id, record.current_version)
        if version.snapshot_blob is None:  # a commit always keeps its newest version's
            raise StorageError(f"task {task_id}: head version {version.version} has no snapshot")
        aggregator = restore_aggregator(await self.blobs.get(version.snapshot_blob))
        state = runtime.state
        state.record = record
        await self._load_counts(state)
        runtime.fence = fence
        await self._start(runtime, aggregator, version, await self._bundle(record), record)
        logger.info("leading task %s from version %d (fence %d)", task_id, version.version, fence)
        return runtime

    async def stop_aggregating(self, task_id: str) -> None:
        """Stop leading: stop folding, let pending commits finish (the fence decides)."""
        runtime = self.runtimes.get(task_id)
        if runtime is None or not runtime.leading:
            return
        worker_tasks, others = runtime.background[:1], runtime.background[1:]
        for worker_task in worker_tasks:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker_task
        if runtime.committer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runtime.committer.drain(), STOP_DRAIN_S)
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        runtime.worker = runtime.committer = runtime.evaluator = None
        runtime.background = []
        logger.info("stopped leading task %s", task_id)

    async def _start(
        self,
        runtime: TaskRuntime,
        aggregator: Aggregator,
        version: VersionRecord,
        bundle: Bundle,
        record: TaskRecord,
    ) -> None:
        state = runtime.state
        # Everything that can fail on I/O first: a failed start leaves the runtime as it was.
        backlog_end = await self.queue.last_position(record.id)
        if record.eval_blob is not None and state.config.eval_every > 0:
            x, y = artifacts.decode_eval_set(await self.blobs.get(record.eval_blob))
            last = await self.repo.versions(record.id, limit=1)
            state.last_eval = last[0].metrics if last and last[0].metrics else None
            runtime.evaluator = Evaluator(
                state,
                Trainer(bundle, threads=1),
                x,
                y,
                self.repo.set_metrics,
                self._executor,
                every=state.config.eval_every,
            )

        async def on_commit(job: CommitJob, elapsed: float) -> None:
            if runtime.evaluator is not None:
                runtime.evaluator.request(job.version, job.params_arrays)
            if self._on_commit is not None:
                self._on_commit(record.id, job, elapsed)
            with contextlib.suppress(Exception):  # replicas also poll; an event is a hint
                await self.events.publish(
                    {"type": "version", "task": record.id, "version": job.version}
                )

        stale_hook = self._on_stale_commit
        runtime.committer = Committer(
            state,
            self.repo,
            self.blobs,
            self.queue,
            fence=runtime.fence,
            on_commit=on_commit,
            on_stale=(lambda: stale_hook(record.id)) if stale_hook is not None else None,
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
        # ready only once the durable backlog is folded (or the worker died trying)
        waiter = asyncio.create_task(caught_up.wait())
        await asyncio.wait([waiter, runtime.background[0]], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        failure = runtime.failure()
        if failure is not None:
            await self.stop_aggregating(record.id)
            raise failure

    # -- control --------------------------------------------------------------------------
    async def set_paused(self, task_id: str, paused: bool) -> TaskRuntime:
        runtime = self.get(task_id)
        await self.repo.set_status(task_id, "paused" if paused else "active")
        runtime.state.paused = paused
        with contextlib.suppress(Exception):
            await self.events.publish({"type": "task", "task": task_id})
        return runtime

    async def drain(self) -> None:
        """Finish pending commits (shutdown)."""
        for runtime in self.runtimes.values():
            if runtime.committer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runtime.committer.drain(), 30)

    async def stop(self) -> None:
        for task_id in list(self.runtimes):
            await self.stop_aggregating(task_id)
        self._executor.shutdown(wait=True, cancel_futures=True)
