"""The embedded leader: fold at ingest, make groups durable, commit versions with them.

An accepted upload is folded into the task's aggregator at once (validation included:
a refused update changes nothing) and joins the open *group*. The group commit loop
cuts the group after ``group_interval_s`` (or at ``group_max`` updates, or at once when
the interval is 0), then, in order:

1. writes one checkpoint of the state after the group: the open buffer, any sealed
   (masked) buffers waiting for their release, and the version the aggregator is at
   (:mod:`server.tasks.checkpoints`);
2. commits the versions stepped since the last cut, with their ledger rows, in one
   fenced database transaction (blobs first: parameters, and the state of the newest
   version without its buffer);

and only then releases the group's acknowledgements. A crash before that leaves none
of the group acknowledged. One write (and fsync) per group instead of one per update;
the checkpoint and the commit of a group run while the next group folds.

After a restart, :meth:`LocalAggregation.resume` puts the buffers of the newest
checkpoint written at the committed head back onto that version's state. A crash
between the two steps leaves a checkpoint of versions that never committed: it is
passed over for the one before, which holds everything acknowledged then, and any
release it was waiting for is asked again (the mask service answers it the same). The
checkpoint is written first because with secure aggregation a version is made from a
sealed buffer while later, acknowledged updates wait in the open one: committing first
and crashing before the checkpoint would leave those updates only in a checkpoint of an
older version. A checkpoint of a version older than the head is spent (every update it
held was applied into a version since).
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

from server.aggregation import FoldResult, Release, StepResult
from server.errors import AsyncflError, Conflict, Unavailable
from server.storage import snapshots
from server.storage.records import LedgerEntry
from server.tasks.checkpoints import Checkpoint
from server.tasks.commits import CommitJob
from server.tasks.leader import Aggregator, LeaderBase

logger = logging.getLogger(__name__)

GROUP_MAX = 512


class Versions(Protocol):
    """Where a group's versions go (:class:`~server.tasks.commits.Committer`)."""

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None: ...


class Releases(Protocol):
    """Where sums of masks come from (secure aggregation: the mask service)."""

    async def release(self, task_id: str, release: Release, size: int) -> np.ndarray[Any, Any]: ...

    async def forget(self, task_id: str, release_ids: list[str]) -> None: ...


class Checkpoints(Protocol):
    """Where a group's checkpoint goes (:class:`~server.tasks.checkpoints.CheckpointLog`)."""

    async def write(self, meta: dict[str, Any], total: Any) -> int: ...

    def resumable(self, task_id: str, head: int) -> Checkpoint | None: ...

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
        self._on_group = on_group
        self._loop = asyncio.get_running_loop()
        self._open = Group(self._loop)
        self._jobs: list[CommitJob] = []
        self._dirty = False
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._broken: BaseException | None = None
        self.groups_written = 0

    # -- restoring ------------------------------------------------------------------------
    def resume(self) -> int:
        """Load the newest checkpoint written at the head version; returns how many
        buffered updates it brought back."""
        latest = self._log.resumable(self.state.id, self.aggregator.params_version)
        if latest is None:
            return 0
        self._log.keep(latest)
        meta = latest.meta
        state = snapshots.decode(meta["state"])
        raw = latest.total
        state["buffer"]["total"] = np.frombuffer(raw, np.float32).copy() if len(raw) else None
        self.aggregator.load_buffer_state(state)
        for row in meta.get("entries", []):
            restored = LedgerEntry(**row)
            self.pending[restored.id] = restored
        if self.aggregator.pending_releases:
            self._changed()  # the next group asks for them again: the same releases
        return len(self.pending)

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
        """For an update this leader knows: what to await before it is durable."""
        return self._open.wait() if update_id in self.pending else None

    def _on_step(self, step: StepResult) -> None:
        self._jobs.append(self._job(step, str(self._open.seq)))

    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    # -- group commit ------------------------------------------------------------------------
    async def run(self) -> None:
        """Cut and commit groups until cancelled (a commit in flight finishes)."""
        while True:
            await self._wake.wait()
            if self._interval > 0:
                due = self._open.opened_at + self._interval - time.monotonic()
                if due > 0 and not self._full.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), due)
            self._wake.clear()
            self._full.clear()
            group, jobs = self._open, self._jobs
            self._open, self._jobs, self._dirty = Group(self._loop), [], False
            started = time.perf_counter()
            work = asyncio.ensure_future(self._cut(jobs))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await self._finish(work, group)  # a commit in flight completes
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

    def _cut(self, jobs: list[CommitJob]) -> Awaitable[None]:
        """Take what this group must make durable now (synchronously: nothing folds in
        between), and return the I/O that writes it."""
        agg = self.aggregator
        snapshot = snapshots.dump(agg.state(buffer=False, params=False)) if jobs else None
        state = agg.buffer_state()
        total = state["buffer"].pop("total")
        state["buffer"]["total"] = None
        meta = {
            "task": self.state.id,
            "version": agg.params_version,  # the committed head once this group is written
            "state": snapshots.encode(state),
            "entries": [self.pending[u].as_row() for u in agg.pending_ids],
        }
        raw = b"" if total is None else total.data.cast("B")
        return self._write(jobs, snapshot, meta, raw, len(agg.pending_releases))

    async def _write(
        self,
        jobs: list[CommitJob],
        snapshot: bytes | None,
        meta: dict[str, Any],
        raw: Any,
        sealed: int,
    ) -> None:
        await self._log.write(meta, raw)  # first: see the module's docstring
        if jobs:
            assert snapshot is not None
            await self._committer.commit(jobs, snapshot)
        if sealed:  # the sealed buffers this checkpoint holds are durable: release them
            await self._release(sealed)

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

    async def drain(self) -> None:
        """Commit what is folded (shutdown): one more group, if anything changed."""
        if self._broken is None and (self._dirty or self._jobs):
            group, jobs = self._open, self._jobs
            self._open, self._jobs, self._dirty = Group(self._loop), [], False
            await self._finish(asyncio.ensure_future(self._cut(jobs)), group)
