"""The embedded leader: fold at ingest, make groups durable by checkpoint, commit behind.

An accepted upload is folded into the task's aggregator at once (validation included:
a refused update changes nothing) and joins the open *group*. The group loop cuts the
group after ``group_interval_s`` (or at ``group_max`` updates, or at once when the
interval is 0), writes one checkpoint of the aggregator's whole state after it, and
releases the group's acknowledgements once that checkpoint is durable. A checkpoint
holds everything resuming needs beyond the database (:mod:`server.tasks.checkpoints`):
the open buffer, any sealed (masked) buffers waiting for their release, the counters,
the ledger entries of the buffered updates, and, while versions wait for their commit,
every one of them with the ledger rows of the updates it applied and the whole state
(parameters and optimizer state) of the newest.

The commit loop then takes the versions of durable checkpoints to the database and the
blob store on its own clock, at most once every ``commit_interval_s`` (all the versions
stepped meanwhile in one fenced transaction; blobs first: the newest version's
parameters and state). A group's durability is one in-place write, whatever its
versions; the transaction and the blob files are paid once a commit interval. Versions
reach devices when committed, up to one interval after their step.

After a restart, :meth:`LocalAggregation.resume` restores the newest whole checkpoint
and commits the versions it holds that the database does not have yet (a crash between
a checkpoint and its commit), so every acknowledged update is then either in exactly one
committed version or in the restored buffer. Only versions whose checkpoint is durable
are committed, so the newest durable checkpoint is never behind the database's head. A
checkpoint written by an earlier release of this module (buffers only, written before
its versions committed) is resumed as it was: the newest one at the committed head.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from client_sdk.wire import pack
from server.aggregation import FoldResult, Release, StepResult, restore_aggregator
from server.errors import AsyncflError, Conflict, StorageError, Unavailable
from server.storage import snapshots
from server.storage.records import LedgerEntry
from server.tasks.checkpoints import Checkpoint, job_rows
from server.tasks.commits import BATCH_ROWS, CommitJob
from server.tasks.leader import Aggregator, LeaderBase

logger = logging.getLogger(__name__)

GROUP_MAX = 512
COMMIT_INTERVAL_S = 0.05
# ledger rows stepped but not committed beyond which groups wait for the commit loop
# (the database is away: every checkpoint carries these rows until they commit)
MAX_UNCOMMITTED_ROWS = 16_384


class Versions(Protocol):
    """Where a group's versions go (:class:`~server.tasks.commits.Committer`)."""

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None: ...


class Releases(Protocol):
    """Where sums of masks come from (secure aggregation: the mask service)."""

    async def release(self, task_id: str, release: Release, size: int) -> np.ndarray[Any, Any]: ...

    async def forget(self, task_id: str, release_ids: list[str]) -> None: ...


class Checkpoints(Protocol):
    """Where a group's checkpoint goes (:class:`~server.tasks.checkpoints.CheckpointLog`)."""

    async def write(self, meta: dict[str, Any], total: Any, params: Any = b"") -> int: ...

    def restore_point(self, task_id: str, head: int) -> Checkpoint | None: ...

    def keep(self, record: Checkpoint) -> None: ...


class Group:
    """Updates folded between two cuts: acknowledged together once durable."""

    _numbers = itertools.count(1)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.seq = next(Group._numbers)
        self.count = 0
        self.opened_at = time.monotonic()
        self._done: asyncio.Future[None] = loop.create_future()

    async def wait(self) -> None:
        """Return once the group is durable; raise Unavailable if it never will be."""
        await asyncio.shield(self._done)

    def settle(self, error: BaseException | None) -> None:
        if self._done.done():
            return
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
            self._done.exception()  # retrieved: nobody may be waiting any more


class LocalAggregation(LeaderBase):
    def __init__(
        self,
        state: Any,
        aggregator: Aggregator,
        committer: Versions,
        log: Checkpoints,
        *,
        record_drops: Callable[[list[LedgerEntry]], None],
        group_interval_s: float = 0.005,
        group_max: int = GROUP_MAX,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        on_fold: Callable[[FoldResult, float], None] | None = None,
        on_group: Callable[[int, float], None] | None = None,
        releases: Releases | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(state, aggregator, record_drops=record_drops, on_fold=on_fold, clock=clock)
        self._committer = committer
        self._log = log
        self._releases = releases
        self._interval = group_interval_s
        self._group_max = group_max
        self._commit_interval = commit_interval_s
        self._on_group = on_group
        self._loop = asyncio.get_running_loop()
        self._open = Group(self._loop)
        self._jobs: list[CommitJob] = []  # stepped since the last cut
        # stepped into a durable checkpoint, not yet committed: (jobs, state of the last)
        self._ready: list[tuple[list[CommitJob], bytes]] = []
        self._committing: list[CommitJob] = []  # the commit in flight
        self._rows: dict[int, bytes] = {}  # packed rows of those, by version
        self._dirty = False
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._ready_event = asyncio.Event()
        self._committed = asyncio.Event()
        # one cut and one commit at a time (drain at shutdown may race the loops)
        self._cut_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._broken: BaseException | None = None
        self.groups_written = 0
        self.commits = 0

    @property
    def buffered(self) -> int:
        """Folded and acknowledged or about to be, not yet handed to the committer."""
        waiting = sum(len(j.applied) for jobs, _ in self._ready for j in jobs)
        return self.aggregator.buffered + waiting + sum(len(j.applied) for j in self._jobs)

    # -- restoring ------------------------------------------------------------------------
    def resume(self) -> int:
        """Restore the newest checkpoint (the versions it holds that the database lacks
        are committed first thing); returns how many buffered updates it brought back."""
        head = self.aggregator.params_version
        latest = self._log.restore_point(self.state.id, head)
        if latest is None:
            return 0
        whole = bool(latest.meta.get("whole"))
        version = int(latest.meta["version"])
        self._log.keep(latest)
        state = snapshots.decode(latest.meta["state"])
        raw = latest.total
        state["buffer"]["total"] = np.frombuffer(raw, np.float32).copy() if len(raw) else None
        if whole and "params" not in state:  # a raw part of the record (else in the state)
            state["params"] = np.frombuffer(latest.params, np.float32).copy()
        if not whole and version != head:
            raise StorageError(
                f"task {self.state.id}: checkpoint {latest.seq} of buffers at version "
                f"{version} is ahead of the committed head {head}"
            )
        if whole:
            restored = restore_aggregator(state)
            restored.version_limit = self.aggregator.version_limit
            self.aggregator = restored
            self._replay(latest, head)
        else:
            self.aggregator.load_buffer_state(state)
        for row in latest.meta.get("entries", []):
            entry = LedgerEntry(**row)
            self.pending[entry.id] = entry
        if self.aggregator.pending_releases:
            self._changed()  # the next group asks for them again: the same releases
        return len(self.pending)

    def _replay(self, record: Checkpoint, head: int) -> None:
        """Queue the versions ``record`` holds beyond the committed ``head`` for commit:
        they were stepped into a durable checkpoint and their commit never happened."""
        version = self.aggregator.params_version
        jobs = [_job_from_row(self.state.id, row) for row in job_rows(record.meta)]
        jobs = [job for job in jobs if job.version > head]
        if not jobs:
            return
        if jobs[-1].version != version or jobs[0].version != head + 1:
            raise StorageError(
                f"task {self.state.id}: checkpoint {record.seq} holds versions "
                f"{jobs[0].version}-{jobs[-1].version}, not {head + 1}-{version}"
            )
        params = [p.copy() for p in self.aggregator.params]
        jobs[-1] = dataclasses.replace(jobs[-1], params_arrays=params)
        snapshot = snapshots.dump(self.aggregator.state(buffer=False, params=False))
        self._ready.append((jobs, snapshot))
        self._ready_event.set()
        logger.info(
            "task %s: committing versions %d-%d from checkpoint %d",
            self.state.id,
            jobs[0].version,
            version,
            record.seq,
        )

    # -- folding ---------------------------------------------------------------------------
    def fold(
        self,
        pending: LedgerEntry,
        tensors: list[np.ndarray[Any, Any]],
        received_at: float,
    ) -> tuple[FoldResult, Group]:
        """Fold an accepted upload into the open group (UpdateRejected: nothing changed)."""
        if self._broken is not None:
            raise Unavailable(
                f"task {self.state.id} cannot make updates durable until restart",
                code="queue_unavailable",
                retry_after=5.0,
            )
        started = time.perf_counter()
        base, n = pending.base_version, pending.num_examples
        assert base is not None
        assert n is not None
        result = self.aggregator.fold(
            pending.id, tensors, n, base, received_at, source=pending.device_id
        )
        self.pending[pending.id] = dataclasses.replace(
            pending, staleness=result.staleness, weight=result.weight
        )
        self.folded_since_start += 1
        if self._on_fold is not None:
            self._on_fold(result, time.perf_counter() - started)
        group = self._open
        group.count += 1
        if result.step is not None:
            self._on_step(result.step)
        self._changed()
        if group.count >= self._group_max:
            self._full.set()
        return result, group

    def durable(self, update_id: str) -> Awaitable[None] | None:
        """For an update this leader knows: what to await before it is durable (folded
        into the open group: buffered, or applied to a version stepped since the cut)."""
        in_open = update_id in self.pending or any(
            e.id == update_id for job in self._jobs for e in job.applied
        )
        return self._open.wait() if in_open else None

    def _on_step(self, step: StepResult) -> None:
        self._jobs.append(self._job(step, str(self._open.seq)))

    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    # -- the group loop and the commit loop ------------------------------------------------
    async def run(self) -> None:
        """Cut groups and commit versions until cancelled (what is in flight finishes),
        or until one of the two loops fails (raised)."""
        loops = [
            asyncio.ensure_future(self._group_loop()),
            asyncio.ensure_future(self._commit_loop()),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for loop in done:
                loop.result()
        finally:
            for loop in loops:
                loop.cancel()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await loop

    async def _group_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._interval > 0:
                due = self._open.opened_at + self._interval - time.monotonic()
                if due > 0 and not self._full.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), due)
            while self._uncommitted_rows() > MAX_UNCOMMITTED_ROWS and self._broken is None:
                self._committed.clear()
                await self._committed.wait()  # the database is slow or away: hold the acks
            self._wake.clear()
            self._full.clear()
            async with self._cut_lock:
                group = self._open
                started = time.perf_counter()
                work = asyncio.ensure_future(self._cut())
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    await self._finish(work, group)  # a checkpoint in flight completes
                    raise
                except BaseException as exc:
                    self._fail(exc)
                    group.settle(self._broken)
                    raise
            group.settle(None)
            self.groups_written += 1
            if self._on_group is not None:
                self._on_group(group.count, time.perf_counter() - started)

    async def _finish(self, work: asyncio.Future[None], group: Group) -> None:
        try:
            await work
        except Exception as exc:
            self._fail(exc)
            group.settle(self._broken)
        else:
            group.settle(None)

    def _cut(self) -> Awaitable[None]:
        """Take the state after this group (synchronously: nothing folds in between), open
        the next group, and return the I/O that makes the state durable."""
        agg = self.aggregator
        jobs = self._jobs
        self._open, self._jobs, self._dirty = Group(self._loop), [], False
        uncommitted = self._committing + [j for batch, _ in self._ready for j in batch] + jobs
        # the whole state while versions wait for their commit; else only what changed
        # since the committed head (whose parameters and state the database has)
        whole = bool(uncommitted)
        # a whole record's parameters go as a raw part, uncopied (see checkpoints)
        state = agg.state(params=False) if whole else agg.buffer_state()
        params = agg.flat_params.data.cast("B") if whole else b""
        total = state["buffer"].pop("total")
        state["buffer"]["total"] = None
        meta = {
            "task": self.state.id,
            "version": agg.params_version,
            "whole": whole,
            "state": snapshots.encode(state),
            "entries": [self.pending[u].as_row() for u in agg.pending_ids],
            "jobs": [self._packed_row(j) for j in uncommitted],
        }
        # the state of the group's last version, for its commit (its params are a blob)
        snapshot = snapshots.dump(agg.state(buffer=False, params=False)) if jobs else None
        raw = b"" if total is None else total.data.cast("B")
        return self._write(jobs, snapshot, meta, raw, params, len(agg.pending_releases))

    async def _write(
        self,
        jobs: list[CommitJob],
        snapshot: bytes | None,
        meta: dict[str, Any],
        total: Any,
        params: Any,
        sealed: int,
    ) -> None:
        await self._log.write(meta, total, params)
        if jobs:  # durable: the commit loop may take them to the database
            assert snapshot is not None
            self._ready.append((jobs, snapshot))
            self._ready_event.set()
        if sealed:  # the sealed buffers this checkpoint holds are durable: release them
            await self._release(sealed)

    async def _commit_loop(self) -> None:
        last = -float("inf")
        while True:
            await self._ready_event.wait()
            due = last + self._commit_interval - time.monotonic()
            if due > 0:
                await asyncio.sleep(due)
            self._ready_event.clear()
            last = time.monotonic()
            work = asyncio.ensure_future(self._commit_ready())
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                try:
                    await work  # a commit in flight completes
                except Exception as exc:
                    self._fail(exc)
                raise
            except BaseException as exc:
                self._fail(exc)
                raise

    async def _commit_ready(self) -> None:
        """Commit the versions of durable checkpoints, in order, up to ``BATCH_ROWS``
        ledger rows a transaction (ending at a group's last version: its state is kept)."""
        async with self._commit_lock:
            await self._commit_groups()

    async def _commit_groups(self) -> None:
        while self._ready:
            take, rows = 0, 0
            for jobs, _ in self._ready:
                rows += sum(max(1, len(j.applied)) for j in jobs)
                take += 1
                if rows >= BATCH_ROWS:
                    break
            groups, self._ready = self._ready[:take], self._ready[take:]
            batch = [j for jobs, _ in groups for j in jobs]
            self._committing = batch
            try:
                await self._committer.commit(batch, groups[-1][1])
            except BaseException:
                self._ready[:0] = groups  # not known committed: later checkpoints keep them
                raise
            finally:
                self._committing = []
            for job in batch:
                self._rows.pop(job.version, None)
            self.commits += 1
            self._committed.set()

    def _packed_row(self, job: CommitJob) -> bytes:
        """A version's row as every checkpoint carries it until it commits (packed once)."""
        packed = self._rows.get(job.version)
        if packed is None:
            packed = self._rows[job.version] = pack(_job_row(job))
        return packed

    def _uncommitted_rows(self) -> int:
        return sum(len(j.applied) for jobs, _ in self._ready for j in jobs)

    async def _release(self, count: int) -> None:
        """Ask the mask service for the sums of masks of the oldest ``count`` sealed
        buffers (each is durable, so a crash asks again for exactly the same release),
        step with each; the versions go out with the next group."""
        assert self._releases is not None
        agg = self.aggregator
        backoff = 0.2
        while count > 0 and agg.pending_releases:
            release = agg.pending_releases[0]
            try:
                mask_sum = await self._releases.release(self.state.id, release, agg.spec.total_size)
            except Unavailable as exc:
                logger.warning(
                    "task %s: release waits for the mask service: %s", self.state.id, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            except Conflict as exc:  # refused: the version is made without these updates
                logger.error("task %s: release refused (%s): %s", self.state.id, exc.code, exc)
                dropped = [self.pending.pop(u) for u in release.ids if u in self.pending]
                self._drop(
                    [dataclasses.replace(e, status="dropped", reason=exc.code) for e in dropped]
                )
                step = agg.skip_release()
            else:
                step = agg.complete_release(mask_sum)
            self._jobs.append(self._job(step, str(self._open.seq), release.release_id))
            count -= 1
            self._changed()

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = (
                exc
                if isinstance(exc, AsyncflError)
                else Unavailable(f"task {self.state.id}: group commit stopped", code="unavailable")
            )
            logger.error("task %s: group commit failed: %s", self.state.id, exc)
        self._open.settle(Unavailable("the group commit stopped", code="queue_unavailable"))
        self._committed.set()

    async def drain(self) -> None:
        """Make what is folded durable and commit every version (shutdown)."""
        if self._broken is None and (self._dirty or self._jobs):
            async with self._cut_lock:
                group = self._open
                await self._finish(asyncio.ensure_future(self._cut()), group)
        if self._broken is None:
            await self._commit_ready()


def _job_row(job: CommitJob) -> dict[str, Any]:
    """A version stepped but not committed, as a checkpoint carries it."""
    return {
        "version": job.version,
        "position": job.position,
        "applied": [e.as_row() for e in job.applied],
        "mean_staleness": job.mean_staleness,
        "stepped_at": job.stepped_at,
        "release_id": job.release_id,
    }


def _job_from_row(task_id: str, row: dict[str, Any]) -> CommitJob:
    """A version read back from a checkpoint: its parameters are not there (only the
    newest version's are kept, and they are the checkpoint's own)."""
    return CommitJob(
        task_id=task_id,
        version=int(row["version"]),
        position=str(row["position"]),
        applied=[LedgerEntry(**e) for e in row["applied"]],
        mean_staleness=row["mean_staleness"],
        params_arrays=[],
        stepped_at=float(row["stepped_at"]),
        release_id=row["release_id"],
    )
