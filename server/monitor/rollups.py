"""Each task's :class:`~server.fleet.rollup.TaskRollup`, kept fresh from the database.

A rollup is refreshed on demand: by age (:meth:`RollupCache.get`, at most once every
``min_age_s`` however many callers ask; concurrent askers share one refresh), or only when
something it reads changed (:meth:`RollupCache.current`, what the dashboard's live
snapshots use: the caller passes *marks*, the in-memory facts that change when the
database does: the task's head, its last held-out evaluation, its refusal counts, the
evaluations this process wrote). Check-ins this process counted are folded in memory as
they are written (:meth:`RollupCache.write_checkins`), so they need no read. Refreshes run
one at a time, on one database connection each, on the reader's thread when there is
one (:mod:`server.storage.reader`: the API's loop stays free, and their CPU is measured
exactly). A refresh reads
only what is new: applied updates of versions after the last folded up to the task's
committed head (by tier, by device, by staleness and arrival time); versions after the
newest folded plus a short tail, only when the head moved or a recent version still
waits for its held-out metrics; evaluations of the newest ``EVAL_TAIL`` versions; and
refusals and check-ins of the trailing ``WINDOW_S``. It reads everything first and folds
after, so a failed read changes nothing. The first read of a task folds its whole history
(versions before the kept window by tier only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass

from server.fleet.cost import CostModel
from server.fleet.rollup import BUCKET_S, MAX_VERSIONS, TIMELINE_KEEP_S, TaskRollup
from server.fleet.rows import (
    OLDER,
    AppliedGroup,
    CheckinBucket,
    EvalGroup,
    LedgerBucket,
    TierDevices,
    VersionRow,
)
from server.fleet.views import TAIL_VERSIONS
from server.monitor.meter import CpuMeter
from server.storage.fleet import FleetRepository
from server.storage.reader import FleetReader

MIN_AGE_S = 2.0  # a rollup is re-read at most this often, however many pages ask
EVAL_TAIL = 50  # versions whose federated evaluations are re-read (late reports)
WINDOW_S = 180  # time buckets re-read (refusals and check-ins land late: batched writers)
METRICS_WAIT_S = 60.0  # how long a version's held-out metrics are waited for
ENROLLED_EVERY_S = 5.0  # the devices table is re-counted by tier this often
RECENT_VERSIONS = 20  # new versions whose updates are read row by row, grouped here


@dataclass
class _Reads:
    versions: list[VersionRow] | None  # None: not re-read (nothing can have changed)
    older: list[AppliedGroup]
    applied: list[AppliedGroup]
    devices: list[tuple[str, str | None]]
    arrivals: list[tuple[int | None, int, int]]
    evaluations: list[EvalGroup] | None  # None: not re-read (see ``skip``)
    eval_from: int
    refusals: list[LedgerBucket] | None
    checkins: list[CheckinBucket] | None
    checkins_before: list[CheckinBucket] | None
    enrolled: list[TierDevices] | None
    since: int
    upto: int


class RollupCache:
    def __init__(
        self,
        repo: FleetRepository,
        model: CostModel,
        *,
        meter: CpuMeter,
        min_age_s: float = MIN_AGE_S,
        clock: Callable[[], float],
        reader: FleetReader | None = None,
    ) -> None:
        self._repo = repo
        self._reader = reader
        self._model = model
        self._meter = meter
        self._min_age_s = min_age_s
        self._clock = clock
        self.rollups: dict[str, TaskRollup] = {}
        self._fresh_at: dict[str, float] = {}
        self._marks: dict[str, Hashable] = {}
        # one refresh at a time, and none between a check-in write and its fold
        self.lock = asyncio.Lock()
        self.enrolled: dict[str | None, int] = {}
        self._enrolled_at = -ENROLLED_EVERY_S
        self._enrolled_count = -1
        self.refreshes = 0

    def cached(self, task_id: str) -> TaskRollup | None:
        return self.rollups.get(task_id)

    async def get(
        self, task_id: str, head: int, created_at: float, marks: Hashable = None
    ) -> TaskRollup:
        """The task's rollup, refreshed if older than ``min_age_s`` (``head``: the
        task's newest committed version; ``created_at``: when the task was created;
        ``marks``: see the module docstring, kept with the refresh)."""
        rollup = self.rollups.get(task_id)
        if rollup is not None and self._clock() - self._fresh_at[task_id] < self._min_age_s:
            return rollup
        async with self.lock:
            rollup = self.rollups.get(task_id)
            if rollup is not None and self._clock() - self._fresh_at[task_id] < self._min_age_s:
                return rollup
            return await self._refresh(task_id, head, created_at, marks)

    def marks_of(self, task_id: str) -> Hashable:
        """The marks of the task's last refresh (None before the first)."""
        return self._marks.get(task_id)

    def stale(self, task_id: str, marks: Hashable) -> bool:
        """Whether the database may hold something the rollup has not read."""
        return task_id not in self.rollups or self._marks.get(task_id) != marks

    async def current(
        self,
        task_id: str,
        head: int,
        created_at: float,
        marks: Hashable,
        skip: frozenset[str] = frozenset(),
    ) -> TaskRollup:
        """The task's rollup, refreshed only if :meth:`stale` (however old it is);
        ``skip``: reads the caller knows cannot have changed (``evaluations``,
        ``refusals``, ``checkins``; never on a task's first read)."""
        rollup = self.rollups.get(task_id)
        if rollup is not None and not self.stale(task_id, marks):
            return rollup
        async with self.lock:
            rollup = self.rollups.get(task_id)
            if rollup is not None and not self.stale(task_id, marks):
                return rollup
            return await self._refresh(task_id, head, created_at, marks, skip)

    async def write_checkins(
        self,
        write: Callable[[], Awaitable[Sequence[tuple[str, int, str, int]]]],
    ) -> None:
        """Run ``write`` (the check-in tally's flush: it returns the ``(task, bucket,
        result, count)`` rows it added to the database) and fold those rows into the
        cached rollups, with no refresh in between (it would read them and they would
        be folded twice)."""
        async with self.lock:
            rows = await write()
            with self._meter.measure("checkins"):
                touched = set()
                for task_id, bucket, result, count in rows:
                    rollup = self.rollups.get(task_id)
                    if rollup is not None:
                        rollup.add_checkin(bucket, result, count)
                        touched.add(rollup)
                for rollup in touched:
                    rollup.checkins_generation += 1

    async def _refresh(
        self,
        task_id: str,
        head: int,
        created_at: float,
        marks: Hashable,
        skip: frozenset[str] = frozenset(),
    ) -> TaskRollup:
        now = self._clock()
        rollup = self.rollups.get(task_id)
        if self._reader is not None:  # exact: the reads' own threads
            reads, read_s = await self._reader.read(
                lambda repo: self._read(repo, task_id, rollup, head, created_at, now, skip)
            )
            started = time.thread_time()
        else:  # the event loop from the first query on (an upper bound: it runs other
            # requests while the SQL runs) and the database driver's thread
            started = time.thread_time()
            async with self._repo.reading() as repo:
                driver_started = repo.driver_cpu_s()
                reads = await self._read(repo, task_id, rollup, head, created_at, now, skip)
                read_s = repo.driver_cpu_s() - driver_started
        try:
            return self._fold(task_id, rollup, reads, head, now, marks)
        finally:
            self._meter.add(time.thread_time() - started + read_s, "refresh")

    def _fold(
        self,
        task_id: str,
        rollup: TaskRollup | None,
        reads: _Reads,
        head: int,
        now: float,
        marks: Hashable,
    ) -> TaskRollup:
        if reads.enrolled is not None:
            self.enrolled = {r.tier: r.count for r in reads.enrolled}
            self._enrolled_at = now
        if rollup is None:
            rollup = TaskRollup(task_id, self._model)
        if reads.versions is not None:
            rollup.add_versions(reads.versions)
        if reads.older:
            rollup.add_applied(reads.older, max(OLDER, head - MAX_VERSIONS))
        rollup.add_devices(reads.devices)
        rollup.add_arrivals(reads.arrivals)
        rollup.add_applied(reads.applied, reads.upto)
        if reads.evaluations is not None:
            rollup.set_evaluations(reads.evaluations, reads.eval_from)
            rollup.evals_head = head
        if reads.refusals is not None:
            rollup.set_ledger(reads.refusals, reads.since)
        if reads.checkins is not None:
            rollup.set_checkins(reads.checkins, reads.since)
        if reads.checkins_before is not None:
            rollup.set_checkins_before(reads.checkins_before)
        rollup.trim(now)
        rollup.generation += 1
        self.rollups[task_id] = rollup
        self._fresh_at[task_id] = now
        self._marks[task_id] = marks
        self.refreshes += 1
        return rollup

    async def _read(
        self,
        repo: FleetRepository,
        task_id: str,
        rollup: TaskRollup | None,
        head: int,
        created_at: float,
        now: float,
        skip: frozenset[str] = frozenset(),
    ) -> _Reads:
        first = rollup is None
        if first:
            skip = frozenset()
        done = OLDER if rollup is None else rollup.applied_upto
        older: list[AppliedGroup] = []
        devices: list[tuple[str, str | None]] = []
        arrivals: list[tuple[int | None, int, int]] = []
        applied: list[AppliedGroup] = []
        if first and head - MAX_VERSIONS > done:  # history before the kept window: by tier
            cut = head - MAX_VERSIONS
            older = await repo.applied_before(task_id, cut)
            devices += await repo.applied_devices(task_id, done, cut)
            arrivals += await repo.arrivals(task_id, done, cut, BUCKET_S)
            done = cut
        if 0 < head - done <= RECENT_VERSIONS:  # a commit or a few: one query
            applied, recent_devices, recent_arrivals = await repo.applied_recent(
                task_id, done, head, BUCKET_S
            )
            devices += recent_devices
            arrivals += recent_arrivals
        elif head > done:
            applied = await repo.applied(task_id, done, head)
            devices += await repo.applied_devices(task_id, done, head)
            arrivals += await repo.arrivals(task_id, done, head, BUCKET_S)
        versions = None
        if rollup is None or head > rollup.newest_version or _metrics_pending(rollup, now):
            after = OLDER if rollup is None else rollup.newest_version - TAIL_VERSIONS
            versions = await repo.versions(task_id, after, MAX_VERSIONS)
        # every version since the last read, and a tail before it (late reports)
        eval_from = 0 if rollup is None else max(0, min(rollup.evals_head, head) - EVAL_TAIL)
        start = max(created_at, now - TIMELINE_KEEP_S) if first else now - WINDOW_S
        since = int(start) - int(start) % BUCKET_S
        enrolled = None
        if now - self._enrolled_at >= ENROLLED_EVERY_S:
            # grouping every device by its JSON tier costs ~17 ms at 10,000 devices on
            # SQLite; counting them ~0.3 ms: regroup only when devices were enrolled
            count = await repo.enrolled_count()
            if count != self._enrolled_count:
                enrolled = await repo.enrolled_by_tier()
                self._enrolled_count = count
            else:
                self._enrolled_at = now
        return _Reads(
            versions=versions,
            older=older,
            applied=applied,
            devices=devices,
            arrivals=arrivals,
            evaluations=(
                None if "evaluations" in skip else await repo.evaluations(task_id, eval_from)
            ),
            eval_from=eval_from,
            refusals=None if "refusals" in skip else await repo.refusals(task_id, since, BUCKET_S),
            checkins=None if "checkins" in skip else await repo.checkins(task_id, since),
            checkins_before=await repo.checkins_before(task_id, since) if first else None,
            enrolled=enrolled,
            since=since,
            upto=max(done, head),
        )


def _metrics_pending(rollup: TaskRollup, now: float) -> bool:
    """Whether a recent version may still get its held-out metrics (they land after the
    commit, from the evaluator)."""
    for number in sorted(rollup.versions)[-TAIL_VERSIONS:]:
        view = rollup.versions[number]
        recent = view.created_at is not None and view.created_at > now - METRICS_WAIT_S
        if view.heldout is None and recent:
            return True
    return False
