"""The monitor: fleet figures for the admin API, the dashboard and ``/metrics``.

Every API process runs one (embedded and distributed alike). It owns the rollup cache,
the evaluation and check-in writers and the update-rate sampler, and one background
loop that flushes the writers every ``FLUSH_S`` and refreshes every task's rollup every
``refresh_s`` (so ``/metrics`` is current with no page open).
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
    ) -> None:
        self.repo = repo
        self._refresh_s = refresh_s
        self.model = model
        self._manager = manager
        self._clock = clock
        self.meter = CpuMeter()
        self.rollups = RollupCache(repo, model, meter=self.meter, clock=clock)
        self.evaluations = EvaluationWriter(repo)
        self.checkins = CheckinTally(metrics.checkins, clock)
        self.rates = RateMeter()
        self._memo: dict[tuple[str, str], tuple[int, Any]] = {}

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

    async def rollup(self, runtime: TaskRuntime) -> TaskRollup:
        state = runtime.state
        return await self.rollups.get(state.id, state.version, state.record.created_at)

    def memo(self, rollup: TaskRollup, name: str, build: Callable[[], Any]) -> Any:
        """A document built from ``rollup``, kept until its next refresh (every open page
        asks for the same tier table, cost and histogram)."""
        key = (rollup.task_id, name)
        found = self._memo.get(key)
        if found is not None and found[0] == rollup.generation:
            return found[1]
        value = build()
        self._memo[key] = (rollup.generation, value)
        return value

    def updates_per_s(self, task_id: str) -> float | None:
        return self.rates.rate(task_id)

    async def tick(self, refresh: bool) -> None:
        """One round of the background loop (also the shutdown flush)."""
        now = self._clock()
        for task_id in list(self._manager.runtimes):
            self.rates.observe(task_id, now, await self._manager.accepted(task_id))
        await self.checkins.flush(self.repo)
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
