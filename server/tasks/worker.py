"""The distributed leader: merge replicas' partials in stream order, cut versions.

The task's leader reads the partial stream (:mod:`server.coordination.partials`) from
the position its last committed version recorded and merges each partial whole into its
aggregator: every group is weighted by its staleness against the leader's own version at
that moment, so FedBuff's weights are what they would be had each update been folded
alone there. When the buffer holds K updates or more after a partial, the aggregator
steps (a partial that crosses K makes a version of all its updates) and the version
goes to the committer with the position of that partial. A version therefore consumes
whole partials, and a new leader resumes after the head's position: every accepted
update is applied exactly once.

A stream entry that cannot be decoded or merged (a poison record) is quarantined (a
ledger row per update it names, or one for the entry when it names none, a metric, a
log line) and the worker carries on: one bad record never stops a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from server.aggregation import FoldResult, StepResult, SyncRoundAggregator
from server.coordination.partials import PartialRecord, PoisonRecord, RedisPartialQueue
from server.coordination.rounds import RedisRounds
from server.errors import AsyncflError, Conflict, Unavailable
from server.storage import snapshots
from server.storage.records import LedgerEntry
from server.tasks.commits import Committer
from server.tasks.leader import Aggregator, LeaderBase, cancel_and_wait
from server.tasks.local import Releases
from server.tasks.state import TaskState

logger = logging.getLogger(__name__)


class PartialWorker(LeaderBase):
    def __init__(
        self,
        state: TaskState,
        aggregator: Aggregator,
        queue: RedisPartialQueue,
        committer: Committer,
        *,
        position: str,
        record_drops: Callable[[list[LedgerEntry]], None],
        on_fold: Callable[[FoldResult, float], None] | None = None,
        on_quarantine: Callable[[int], None] | None = None,
        rounds: RedisRounds | None = None,
        releases: Releases | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(state, aggregator, record_drops=record_drops, on_fold=on_fold, clock=clock)
        self._queue = queue
        self._committer = committer
        self.position = position
        self._on_quarantine = on_quarantine
        self._rounds = rounds
        self._releases = releases
        self._round_changed = asyncio.Event()
        self.quarantined = 0

    async def run(self, caught_up: asyncio.Event, backlog_end: str) -> None:
        """Merge until cancelled; set ``caught_up`` once ``backlog_end`` is merged."""
        loops: list[asyncio.Task[None]] = []
        if isinstance(self.aggregator, SyncRoundAggregator):
            await self._resume_rounds(self.aggregator)
            loops.append(asyncio.create_task(self.tick_rounds(), name=f"rounds:{self.state.id}"))
            loops.append(
                asyncio.create_task(self._publish_rounds(), name=f"round-pub:{self.state.id}")
            )
        key = self._queue.position_key
        end = key(backlog_end)
        if key(self.position) >= end:
            caught_up.set()
        try:
            async for item in self._queue.consume(self.state.id, self.position):
                self.position = item.position
                if isinstance(item, PoisonRecord):
                    self._quarantine(item.position, item.reason, [])
                else:
                    self.merge(item)
                    if self.aggregator.pending_releases:
                        await self._release_all()
                if not caught_up.is_set() and key(self.position) >= end:
                    caught_up.set()
        finally:
            for loop in loops:
                await cancel_and_wait(loop)

    def merge(self, record: PartialRecord) -> None:
        """Merge one partial (synchronous: nothing else touches the aggregator meanwhile)."""
        started = time.perf_counter()
        try:
            entries = {e.id: e for e in (_entry(self.state.id, f) for f in record.entries)}
            result = self.aggregator.merge(record.partial, now=record.created_at)
        except (AsyncflError, TypeError, ValueError) as exc:  # a bug upstream, not a stop
            self._quarantine(record.position, repr(exc), record.entries)
            return
        for uid, staleness, weight in result.applied:
            self.pending[uid] = replace(entries[uid], staleness=staleness, weight=weight)
        self.folded_since_start += len(result.applied)
        self._drop(
            [
                replace(entries[uid], status="dropped", reason=result.drop_reason)
                for uid in result.dropped
            ]
        )
        if self._on_fold is not None and result.applied:
            elapsed = (time.perf_counter() - started) / len(result.applied)
            for _uid, staleness, weight in result.applied:
                self._on_fold(FoldResult(staleness, weight, 0.0, False), elapsed)
        if result.step is not None:
            self._on_step(result.step)
            self._changed()

    def _changed(self) -> None:
        self._round_changed.set()

    async def _release_all(self) -> None:
        """Masked: step with each sealed buffer once the mask service released it. The
        stream replays the same partials in the same order, so a new leader asks for
        exactly the same releases."""
        agg = self.aggregator
        backoff = 0.2
        while agg.pending_releases:
            release = agg.pending_releases[0]
            if self._releases is None:
                raise Unavailable("no mask service for a masked task", code="secagg_unavailable")
            try:
                mask_sum = await self._releases.release(self.state.id, release, agg.spec.total_size)
            except Unavailable as exc:
                logger.warning(
                    "task %s: release waits for the mask service: %s", self.state.id, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            except Conflict as exc:
                logger.error("task %s: release refused (%s): %s", self.state.id, exc.code, exc)
                dropped = [self.pending.pop(u) for u in release.ids if u in self.pending]
                self._drop([replace(e, status="dropped", reason=exc.code) for e in dropped])
                step = agg.skip_release()
            else:
                step = agg.complete_release(mask_sum)
            self._committer.submit(
                self._job(step, self.position, release.release_id),
                snapshots.dump(agg.state(buffer=False, params=False)),
            )

    async def _resume_rounds(self, agg: SyncRoundAggregator) -> None:
        """Never reuse a round id replicas may have handed out under a previous leader."""
        if self._rounds is None:
            return
        latest = await self._rounds.latest_id(self.state.id)
        dropped = agg.renumber_after(latest)
        self._drop(
            [
                replace(self.pending.pop(u), status="dropped", reason="round_abandoned")
                for u in dropped
                if u in self.pending
            ]
        )
        self._changed()

    async def _publish_rounds(self) -> None:
        """Keep the shared round (what replicas admit into) equal to the aggregator's."""
        agg = self.aggregator
        assert isinstance(agg, SyncRoundAggregator)
        while True:
            await self._round_changed.wait()
            self._round_changed.clear()
            if self._rounds is None:
                continue
            current = agg.current_round
            try:
                await self._rounds.publish(
                    self.state.id,
                    agg.round_id,
                    agg.version if current is None else current.version,
                    0.0 if current is None else current.deadline,
                    is_open=current is not None,
                    cohort=agg.cohort_target,
                    goal=agg.goal,
                )
            except AsyncflError as exc:  # Redis away: publish again on the next change
                logger.warning("task %s: round not published: %s", self.state.id, exc)
                await asyncio.sleep(0.5)
                self._round_changed.set()

    def _on_step(self, step: StepResult) -> None:
        self._committer.submit(
            self._job(step, self.position),
            snapshots.dump(self.aggregator.state(buffer=False, params=False)),
        )

    def _quarantine(self, position: str, reason: str, entries: list[dict[str, Any]]) -> None:
        logger.error(
            "task %s: quarantined stream entry %s (%s)", self.state.id, position, reason[:200]
        )
        rows = [
            LedgerEntry(
                id=str(e["id"])[:64],
                task_id=self.state.id,
                device_id=str(e.get("device_id", ""))[:64],
                created_at=time.time(),
                status="quarantined",
                reason="poison_record",
            )
            for e in entries
            if isinstance(e, dict) and "id" in e
        ] or [
            LedgerEntry(
                id=f"poison:{position}"[:64],
                task_id=self.state.id,
                device_id="",
                created_at=time.time(),
                status="quarantined",
                reason="poison_record",
            )
        ]
        self.quarantined += len(rows)
        self._record_drops(rows)
        if self._on_quarantine is not None:
            self._on_quarantine(len(rows))


def _entry(task_id: str, fields: dict[str, Any]) -> LedgerEntry:
    """The ledger entry a replica shipped for an update (TypeError when malformed)."""
    known = {k: v for k, v in fields.items() if k in _FIELDS}
    entry = LedgerEntry(**known)
    if entry.task_id != task_id or not isinstance(entry.id, str):
        raise ValueError(f"entry {entry.id!r} is not of task {task_id}")
    return entry


_FIELDS = frozenset(LedgerEntry.__dataclass_fields__)
