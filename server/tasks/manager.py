"""Task lifecycle: create, load, refresh, pause and resume; start and stop aggregating.

Every process holds a :class:`TaskState` per task (what check-in and upload need).
A process that aggregates a task (it holds the task's lease, see
:mod:`server.tasks.leadership`) also runs its leader and evaluator. Starting claims a
new fencing token in the database and restores the aggregator from the state stored
with the newest committed version; then

- embedded (:class:`~server.tasks.local.LocalAggregation`): the newest checkpoint of the
  open buffer is put back if it was written at that version;
- distributed (:class:`~server.tasks.worker.PartialWorker`): the partial stream is
  replayed after that version's position before the leader reports ready;

so every acknowledged update is applied exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from client_sdk.bundle import Bundle
from client_sdk.trainer import Trainer
from server.aggregation import (
    FoldResult,
    ModelSpec,
    make_aggregator,
    restore_aggregator,
    secret_seed,
)
from server.coordination.events import EventBus
from server.coordination.partials import START, RedisPartialQueue
from server.coordination.rounds import RedisRounds
from server.coordination.sessions import SessionStore
from server.errors import AsyncflError, BadRequest, Conflict, NotFound, StorageError
from server.settings import LogFsync
from server.storage import snapshots
from server.storage.blobs import LocalBlobStore
from server.storage.ledger import LedgerRepository
from server.storage.records import TaskRecord, VersionRecord
from server.storage.tasks import TaskRepository
from server.tasks import artifacts
from server.tasks.checkpoints import CheckpointLog
from server.tasks.commits import CommitJob, Committer
from server.tasks.config import TaskConfig
from server.tasks.evaluation import Evaluator
from server.tasks.leader import Aggregator, LeaderBase
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.local import LocalAggregation, Releases
from server.tasks.state import PublishedVersion, TaskState
from server.tasks.worker import PartialWorker

logger = logging.getLogger(__name__)

TASK_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
STOP_DRAIN_S = 10.0


@dataclass
class TaskRuntime:
    """A loaded task: its state and, while this process leads it, its leader."""

    state: TaskState
    local: LocalAggregation | None = None  # embedded leader
    worker: PartialWorker | None = None  # distributed leader
    committer: Committer | None = None
    evaluator: Evaluator | None = None
    checkpoints: CheckpointLog | None = None
    fence: int = 0
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def leader(self) -> LeaderBase | None:
        return self.local if self.local is not None else self.worker

    @property
    def leading(self) -> bool:
        return self.leader is not None

    def buffered(self) -> int:
        """Updates folded, or stepped into a version not yet committed (leader only)."""
        leader = self.leader
        if leader is None or self.committer is None:
            return 0
        return leader.buffered + self.committer.pending_updates

    def knows_update(self, update_id: str) -> bool:
        """Folded into the buffer, a pending commit, or the recent window."""
        leader = self.leader
        return leader is not None and leader.knows(update_id)

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


def worker_aggregator(params: list[Any], config: TaskConfig) -> Aggregator:
    """The aggregator a leader runs. The ingest enforces ``max_staleness`` before it
    acknowledges; an acknowledged update must never be refused later by the leader, so
    the leader's copy has no bound. Secure aggregation: it folds masked updates."""
    secure = config.secure_aggregation
    masked = None if secure is None else secure.masked(config.aggregation)
    # noise the public config's seed would let anyone regenerate and subtract
    noise_seed = secret_seed() if config.aggregation.noise_multiplier > 0 else None
    aggregator = make_aggregator(
        params,
        replace(config.aggregation, max_staleness=None),
        masked=masked,
        noise_seed=noise_seed,
    )
    limit_versions(aggregator, config)
    return aggregator


def limit_versions(aggregator: Aggregator, config: TaskConfig) -> None:
    """A DP task's aggregator makes no version beyond what its budget allows."""
    budget = config.budget
    aggregator.version_limit = None if budget is None else budget.max_versions


class TaskManager:
    def __init__(
        self,
        *,
        repo: TaskRepository,
        ledger: LedgerRepository,
        blobs: LocalBlobStore,
        partials: RedisPartialQueue | None,
        rounds: RedisRounds | None = None,
        checkpoints_dir: Path,
        checkpoint_fsync: LogFsync,
        sessions: SessionStore,
        events: EventBus,
        ledger_writer: LedgerWriter,
        exports_dir: Path,
        eval_threads: int = 1,
        group_interval_s: float = 0.005,
        commit_interval_s: float = 0.05,
        on_fold: Callable[[str, FoldResult, float], None] | None = None,
        on_commit: Callable[[str, CommitJob, float], None] | None = None,
        on_stale_commit: Callable[[str], None] | None = None,
        on_group: Callable[[str, int, float], None] | None = None,
        on_quarantine: Callable[[str, int], None] | None = None,
        releases: Releases | None = None,
    ) -> None:
        self.repo = repo
        self.ledger = ledger
        self.blobs = blobs
        self.partials = partials
        self._rounds = rounds
        self._checkpoints_dir = checkpoints_dir
        self._checkpoint_fsync = checkpoint_fsync
        self._group_interval_s = group_interval_s
        self._commit_interval_s = commit_interval_s
        self._on_group = on_group
        self._on_quarantine = on_quarantine
        self._releases = releases
        self.sessions = sessions
        self.events = events
        self._ledger_writer = ledger_writer
        self._exports_dir = exports_dir
        self._on_fold = on_fold
        self._on_commit = on_commit
        self._on_stale_commit = on_stale_commit
        self._executor = ThreadPoolExecutor(max(1, eval_threads), thread_name_prefix="eval")
        self.runtimes: dict[str, TaskRuntime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._bundles: dict[str, Bundle] = {}

    # -- lookup ---------------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRuntime:
        runtime = self.runtimes.get(task_id)
        if runtime is None:
            raise NotFound(f"unknown task {task_id!r}", code="unknown_task")
        return runtime

    async def accepted(self, task_id: str) -> int:
        """Updates ever acknowledged for the task: counted in Redis across replicas, or,
        embedded, what is applied, dropped, or durable in the leader's buffer."""
        if self.partials is not None:
            return await self.partials.appended_count(task_id)
        runtime = self.get(task_id)
        state = runtime.state
        return state.applied + state.dropped + runtime.buffered()

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
        aggregator = worker_aggregator(bundle.initial_params, request.config)
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
            snapshot_blob=await self.blobs.put(snapshots.dump(aggregator.state())),
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
        params_blob = await self.repo.params_blob(record.id, version.version)  # a head has them
        params_bytes = await self.blobs.get(params_blob)
        params = artifacts.decode_version_params(params_bytes, bundle.manifest)
        state = TaskState(
            record=record,
            config=config,
            manifest=bundle.manifest,
            spec=ModelSpec.from_arrays(params),
            published=PublishedVersion(
                version=version.version,
                params_blob=params_blob,
                params=params_bytes,
                committed_at=version.created_at,
            ),
            paused=record.status == "paused",
        )
        await self._load_counts(state)
        existing = self.runtimes.get(record.id)
        if existing is not None:
            # loaded meanwhile (a create and a refresh raced over the awaits above): keep
            # the first, which the leadership may already run; replacing it left the task
            # answering task_not_led for good
            return existing
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
        params_blob = await self.repo.params_blob(task_id, version.version)
        state.publish(
            PublishedVersion(
                version=version.version,
                params_blob=params_blob,
                params=await self.blobs.get(params_blob),
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
        """Lead the task: claim a fence, restore the newest version, replay the queue.
        Starts and stops of one task never overlap (the admin API and the leadership
        loop may both ask)."""
        async with self._lock(task_id):
            return await self._start_aggregating(task_id)

    async def settled(self, task_id: str) -> None:
        """Return once no start or stop of the task is under way."""
        async with self._lock(task_id):
            return

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    async def _start_aggregating(self, task_id: str) -> TaskRuntime:
        runtime = self.get(task_id)
        if runtime.leading:
            return runtime
        fence = await self.repo.claim_fence(task_id)
        record = await self.repo.get(task_id)
        await self.refresh(task_id)
        version = await self.repo.version(task_id, record.current_version)
        if version.snapshot_blob is None:  # a commit always keeps its newest version's
            raise StorageError(f"task {task_id}: head version {version.version} has no snapshot")
        saved = snapshots.load(await self.blobs.get(version.snapshot_blob))
        if "params" not in saved:  # stored beside the version's params blob (a commit's)
            params = await self.blobs.get(await self.repo.params_blob(task_id, version.version))
            arrays = artifacts.decode_version_params(params, runtime.state.manifest)
            saved = snapshots.with_params(saved, arrays)
        aggregator = restore_aggregator(saved)
        limit_versions(aggregator, runtime.state.config)
        state = runtime.state
        state.record = record
        await self._load_counts(state)
        runtime.fence = fence
        await self._start(runtime, aggregator, version, await self._bundle(record), record)
        logger.info("leading task %s from version %d (fence %d)", task_id, version.version, fence)
        return runtime

    async def stop_aggregating(self, task_id: str) -> None:
        """Stop leading: stop folding, let pending commits finish (the fence decides)."""
        async with self._lock(task_id):
            await self._stop_aggregating(task_id)

    async def _stop_aggregating(self, task_id: str) -> None:
        runtime = self.runtimes.get(task_id)
        if runtime is None or not runtime.leading:
            return
        # the leader's loop first (an embedded group commit in flight finishes), then
        # what is left of its commits, then the rest
        leader_tasks, others = runtime.background[:1], runtime.background[1:]
        await _stop(leader_tasks, task_id)
        try:
            if runtime.local is not None:
                await asyncio.wait_for(runtime.local.drain(), STOP_DRAIN_S)
            elif runtime.committer is not None:
                await asyncio.wait_for(runtime.committer.drain(), STOP_DRAIN_S)
        except (TimeoutError, StorageError) as exc:
            logger.warning("task %s: last commits did not finish: %r", task_id, exc)
        await _stop(others, task_id)
        if runtime.checkpoints is not None:
            await asyncio.to_thread(runtime.checkpoints.close)
        runtime.local = runtime.worker = runtime.committer = runtime.evaluator = None
        runtime.checkpoints = None
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
        backlog_end = (
            await self.partials.last_position(record.id) if self.partials is not None else START
        )
        evaluator = await self._evaluator(state, bundle, record)
        committer = Committer(
            state,
            self.repo,
            self.blobs,
            self.partials,
            fence=runtime.fence,
            on_commit=self._commit_hook(runtime, record.id),
            on_stale=self._stale_hook(record.id),
        )
        on_fold = self._fold_hook(record.id)
        if self.partials is None:
            log = await asyncio.to_thread(
                CheckpointLog, self._checkpoints_dir / record.id, self._checkpoint_fsync
            )
            local = LocalAggregation(
                state,
                aggregator,
                committer,
                log,
                record_drops=self._ledger_writer.add,
                group_interval_s=self._group_interval_s,
                commit_interval_s=self._commit_interval_s,
                on_fold=on_fold,
                on_group=self._group_hook(record.id),
                releases=self._releases,
            )
            try:
                restored = local.resume()
            except StorageError:
                await asyncio.to_thread(log.close)
                raise
            runtime.local, runtime.checkpoints = local, log
            runtime.committer, runtime.evaluator = committer, evaluator
            runtime.background = [asyncio.create_task(local.run(), name=f"group:{record.id}")]
            runtime.background.append(
                asyncio.create_task(local.tick_rounds(), name=f"rounds:{record.id}")
            )
            if restored:
                logger.info("task %s: %d buffered update(s) restored", record.id, restored)
            self._start_evaluator(runtime)
            return
        worker = PartialWorker(
            state,
            aggregator,
            self.partials,
            committer,
            position=version.queue_position,
            record_drops=self._ledger_writer.add,
            on_fold=on_fold,
            on_quarantine=self._quarantine_hook(record.id),
            rounds=self._rounds,
            releases=self._releases,
        )
        runtime.worker, runtime.committer, runtime.evaluator = worker, committer, evaluator
        caught_up = asyncio.Event()
        runtime.background = [
            asyncio.create_task(worker.run(caught_up, backlog_end), name=f"worker:{record.id}"),
            asyncio.create_task(committer.run(), name=f"committer:{record.id}"),
        ]
        self._start_evaluator(runtime)
        # ready only once the durable backlog is merged (or the worker died trying)
        waiter = asyncio.create_task(caught_up.wait())
        await asyncio.wait([waiter, runtime.background[0]], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        failure = runtime.failure()
        if failure is not None:
            await self._stop_aggregating(record.id)
            raise failure

    async def _evaluator(
        self, state: TaskState, bundle: Bundle, record: TaskRecord
    ) -> Evaluator | None:
        if record.eval_blob is None or state.config.eval_every <= 0:
            return None
        x, y = artifacts.decode_eval_set(await self.blobs.get(record.eval_blob))
        last = await self.repo.versions(record.id, limit=1)
        state.last_eval = last[0].metrics if last and last[0].metrics else None
        return Evaluator(
            state,
            Trainer(bundle, threads=1),
            x,
            y,
            self.repo.set_metrics,
            self._executor,
            every=state.config.eval_every,
        )

    def _start_evaluator(self, runtime: TaskRuntime) -> None:
        if runtime.evaluator is not None:
            runtime.background.append(
                asyncio.create_task(runtime.evaluator.run(), name=f"eval:{runtime.state.id}")
            )

    def _commit_hook(
        self, runtime: TaskRuntime, task_id: str
    ) -> Callable[[CommitJob, float], Awaitable[None]]:
        async def on_commit(job: CommitJob, elapsed: float) -> None:
            if runtime.evaluator is not None and job.params_arrays:  # (not: replayed)
                runtime.evaluator.request(job.version, job.params_arrays)
            if self._on_commit is not None:
                self._on_commit(task_id, job, elapsed)
            if job.release_id is not None and self._releases is not None:
                await self._releases.forget(task_id, [job.release_id])  # seeds may go now
            budget = runtime.state.config.budget
            if budget is not None and budget.reached(job.version) and not runtime.state.paused:
                logger.warning(
                    "task %s: privacy budget reached at version %d (epsilon %.3f of %.3f): pausing",
                    task_id,
                    job.version,
                    budget.epsilon(job.version),
                    budget.config.target_epsilon,
                )
                await self.set_paused(task_id, True)
            try:  # replicas also poll; an event is a hint
                await self.events.publish(
                    {"type": "version", "task": task_id, "version": job.version}
                )
            except AsyncflError as exc:
                logger.debug("task %s: version event not published: %s", task_id, exc)

        return on_commit

    def _stale_hook(self, task_id: str) -> Callable[[], None] | None:
        hook = self._on_stale_commit
        return (lambda: hook(task_id)) if hook is not None else None

    def _fold_hook(self, task_id: str) -> Callable[[FoldResult, float], None] | None:
        hook = self._on_fold
        return (lambda result, s: hook(task_id, result, s)) if hook is not None else None

    def _group_hook(self, task_id: str) -> Callable[[int, float], None] | None:
        hook = self._on_group
        return (lambda n, s: hook(task_id, n, s)) if hook is not None else None

    def _quarantine_hook(self, task_id: str) -> Callable[[int], None] | None:
        hook = self._on_quarantine
        return (lambda n: hook(task_id, n)) if hook is not None else None

    # -- control --------------------------------------------------------------------------
    async def set_paused(self, task_id: str, paused: bool) -> TaskRuntime:
        runtime = self.get(task_id)
        budget = runtime.state.config.budget
        if not paused and budget is not None and budget.reached(runtime.state.version):
            raise Conflict(
                f"task {task_id!r} spent its privacy budget (epsilon "
                f"{budget.epsilon(runtime.state.version):.3f} of "
                f"{budget.config.target_epsilon:g}); it cannot resume",
                code="privacy_budget_reached",
            )
        await self.repo.set_status(task_id, "paused" if paused else "active")
        runtime.state.paused = paused
        try:
            await self.events.publish({"type": "task", "task": task_id})
        except AsyncflError as exc:
            logger.warning("task %s: pause event not published: %s", task_id, exc)
        return runtime

    async def drain(self) -> None:
        """Finish pending commits (shutdown)."""
        for task_id, runtime in self.runtimes.items():
            try:
                if runtime.local is not None:
                    await asyncio.wait_for(runtime.local.drain(), 30)
                elif runtime.committer is not None:
                    await asyncio.wait_for(runtime.committer.drain(), 30)
            except (TimeoutError, AsyncflError) as exc:
                logger.warning("task %s: pending commits not finished: %r", task_id, exc)

    async def stop(self) -> None:
        for task_id in list(self.runtimes):
            await self.stop_aggregating(task_id)
        self._executor.shutdown(wait=True, cancel_futures=True)


async def _stop(tasks: list[asyncio.Task[None]], task_id: str) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # it stopped on its own before: already logged there
            logger.debug("task %s: %s ended with %r", task_id, task.get_name(), exc)
