"""The monitor: fleet figures for the admin API, the dashboard and ``/metrics``.

Every API process runs one (embedded and distributed alike). It owns the rollup cache,
the evaluation and check-in writers and the update-rate sampler, and one background
loop that flushes the writers every ``FLUSH_S`` and refreshes every task's rollup every
``refresh_s`` (so ``/metrics`` is current with no page open). The dashboard's live
snapshots (:mod:`server.monitor.snapshots`) ask for :meth:`Monitor.current` instead: a
refresh only when the task's :meth:`Monitor.marks` moved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from server.errors import AsyncflError
from server.fleet.cost import CostModel
from server.fleet.rollup import TaskRollup
from server.metrics import Metrics
from server.monitor.meter import CpuMeter
from server.monitor.rates import RateMeter
from server.monitor.recorder import CheckinTally, EvaluationWriter
from server.monitor.rollups import RollupCache
from server.storage.fleet import FleetRepository
from server.storage.reader import FleetReader
from server.storage.records import EvaluationRecord
from server.tasks.manager import TaskManager, TaskRuntime

logger = logging.getLogger(__name__)

FLUSH_S = 1.0


class Monitor:
    def __init__(
        self,
        repo: FleetRepository,
        manager: TaskManager,
        metrics: Metrics,
        model: CostModel,
        *,
        refresh_s: float = 15.0,
        clock: Callable[[], float] = time.time,
        reader: FleetReader | None = None,
        local: bool = False,
    ) -> None:
        # local: this process is the only writer of evaluations, refusals and check-ins
        # (embedded mode), so their marks tell when a re-read is needed
        self._local = local
        self.repo = repo
        self._refresh_s = refresh_s
        self.model = model
        self._manager = manager
        self._clock = clock
        self.meter = CpuMeter()
        self.rollups = RollupCache(repo, model, meter=self.meter, clock=clock, reader=reader)
        self.evaluations = EvaluationWriter(repo)
        self.checkins = CheckinTally(metrics.checkins, clock)
        self.rates = RateMeter()
        self._memo: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}

    def record_evaluation(
        self, sid: str, task_id: str, device_id: str, version: int, metrics: dict[str, float]
    ) -> None:
        """A device's federated evaluation (already validated by the sessions API)."""
        self.evaluations.add(
            EvaluationRecord(
                id=sid,
                task_id=task_id,
                device_id=device_id,
                version=version,
                created_at=self._clock(),
                num_examples=int(metrics["num_examples"]),
                loss=metrics["loss"],
                accuracy=metrics.get("accuracy"),
            )
        )

    def marks(self, runtime: TaskRuntime, head: int | None = None) -> tuple[Any, ...]:
        """What changes, in this process's memory, when the database gets something a
        rollup reads: a commit (the head; ``head``: a newer one another process
        announced), a held-out evaluation, a refusal or drop, a federated evaluation
        written here. Check-ins written here are folded as written (no read needed);
        those other replicas counted arrive with the next refresh."""
        state = runtime.state
        last_eval = state.last_eval or {}
        return (
            max(state.version, head if head is not None else -1),
            last_eval.get("version"),
            last_eval.get("at"),
            state.dropped,
            sum(state.rejected.values()),
            self.evaluations.written[state.id],
        )

    async def rollup(self, runtime: TaskRuntime) -> TaskRollup:
        """The task's rollup, at most ``MIN_AGE_S`` old (the admin API's documents)."""
        state = runtime.state
        marks = self.marks(runtime)
        return await self.rollups.get(state.id, marks[0], state.record.created_at, marks)

    async def current(self, runtime: TaskRuntime, head: int | None = None) -> TaskRollup:
        """The task's rollup, re-read only if its marks moved (the live snapshots).
        Embedded, a commit re-reads only what a commit changes: evaluations, refusals
        and check-ins are written by this process alone, whose marks say when."""
        marks = self.marks(runtime, head)
        before = self.rollups.marks_of(runtime.state.id)
        skip: set[str] = set()
        if self._local and isinstance(before, tuple):
            skip.add("checkins")  # folded as written
            if before[5] == marks[5]:
                skip.add("evaluations")
            if before[3:5] == marks[3:5]:
                skip.add("refusals")
        return await self.rollups.current(
            runtime.state.id, marks[0], runtime.state.record.created_at, marks, frozenset(skip)
        )

    def memo(
        self, rollup: TaskRollup, name: str, build: Callable[[], Any], *, checkins: bool = False
    ) -> Any:
        """A document built from ``rollup``, kept until its next refresh (every open page
        asks for the same tier table, cost and histogram); ``checkins``: one that shows
        check-ins, rebuilt when check-ins counted here are folded too."""
        key = (rollup.task_id, name)
        generation = (rollup.generation, rollup.checkins_generation if checkins else 0)
        found = self._memo.get(key)
        if found is not None and found[0] == generation:
            return found[1]
        value = build()
        self._memo[key] = (generation, value)
        return value

    def updates_per_s(self, task_id: str) -> float | None:
        return self.rates.rate(task_id)

    async def tick(self, refresh: bool) -> None:
        """One round of the background loop (also the shutdown flush)."""
        now = self._clock()
        for task_id in list(self._manager.runtimes):
            self.rates.observe(task_id, now, await self._manager.accepted(task_id))
        await self.rollups.write_checkins(lambda: self.checkins.flush(self.repo))
        await self.evaluations.flush()
        if refresh:
            for runtime in list(self._manager.runtimes.values()):
                await self.rollup(runtime)

    async def run(self) -> None:
        last_refresh = -self._refresh_s
        while True:
            await asyncio.sleep(min(FLUSH_S, self._refresh_s))
            now = self._clock()
            refresh = now - last_refresh >= self._refresh_s
            try:
                await self.tick(refresh)
            except AsyncflError as exc:  # the database or Redis is away: try again later
                logger.warning("monitor: %s", exc)
            if refresh:
                last_refresh = now
