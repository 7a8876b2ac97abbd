"""A task's aggregator at work: consume the update queue in order, fold, cut versions.

The worker owns the task's :mod:`server.aggregation` object. It folds every queued
update exactly once (the queue resumes after the position the last committed version
recorded; :meth:`has_folded` guards the rest), and on every step it snapshots the
aggregator and hands a :class:`~server.tasks.commits.CommitJob` to the committer. In
sync mode a ticker closes rounds at their deadline and opens the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from client_sdk.wire import encode_tensors, pack
from server.aggregation import (
    FedBuffAggregator,
    FoldResult,
    RoundState,
    StepResult,
    SyncRoundAggregator,
)
from server.coordination.queue import QueuedUpdate, UpdateQueue
from server.errors import AsyncflError, UpdateRejected
from server.fleet.cost import cost_fields
from server.storage.records import LedgerEntry
from server.tasks.commits import CommitJob, Committer
from server.tasks.state import TaskState
from server.updates import parse_update

logger = logging.getLogger(__name__)

Aggregator = FedBuffAggregator | SyncRoundAggregator
SYNC_TICK_S = 0.25


class TaskWorker:
    def __init__(
        self,
        state: TaskState,
        aggregator: Aggregator,
        queue: UpdateQueue,
        committer: Committer,
        *,
        position: str,
        record_rejections: Callable[[list[LedgerEntry]], None],
        on_fold: Callable[[FoldResult, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.aggregator = aggregator
        self._queue = queue
        self._committer = committer
        self.position = position
        self._record_rejections = record_rejections
        self._on_fold = on_fold
        self._clock = clock
        self._pending: dict[str, LedgerEntry] = {}
        self.folded_since_start = 0

    @property
    def buffered(self) -> int:
        return self.aggregator.buffered

    async def run(self, caught_up: asyncio.Event, backlog_end: str) -> None:
        """Consume until cancelled; set ``caught_up`` once ``backlog_end`` is folded."""
        ticker = None
        if isinstance(self.aggregator, SyncRoundAggregator):
            if self.aggregator.current_round is None:
                self.aggregator.start_round(self._clock())
            ticker = asyncio.create_task(self._tick_rounds(), name=f"rounds:{self.state.id}")
        key = self._queue.position_key
        end = key(backlog_end)
        if key(self.position) >= end:
            caught_up.set()
        try:
            async for update in self._queue.consume(self.state.id, self.position):
                self.fold(update)
                if not caught_up.is_set() and key(self.position) >= end:
                    caught_up.set()
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    def fold(self, update: QueuedUpdate) -> None:
        """Fold one queued update (synchronous: no other fold interleaves)."""
        self.position = update.position
        agg = self.aggregator
        if agg.has_folded(update.update_id):
            logger.warning(
                "task %s: update %s already folded; skipped", self.state.id, update.update_id
            )
            return
        tensors, norm = update.tensors, update.norm
        if tensors is None:  # replayed from disk: decode, and let the fold validate again
            tensors, norm = parse_update(update.body).tensors, None
        started = time.perf_counter()
        try:
            if isinstance(agg, SyncRoundAggregator):
                result = agg.fold(
                    update.update_id,
                    tensors,
                    update.num_examples,
                    update.base_version,
                    now=update.created_at,
                    norm=norm,
                )
            else:
                result = agg.fold(
                    update.update_id,
                    tensors,
                    update.num_examples,
                    update.base_version,
                    norm=norm,
                )
        except UpdateRejected as exc:
            # Accepted by the API but refused here: a sync round closed under it.
            self._drop([_entry(update, "dropped", reason=exc.code)])
            return
        self.folded_since_start += 1
        if self._on_fold is not None:
            self._on_fold(result, time.perf_counter() - started)
        self._pending[update.update_id] = _entry(
            update, "applied", staleness=result.staleness, weight=result.weight
        )
        if result.step is not None:
            self._cut_version(result.step)

    def _cut_version(self, step: StepResult) -> None:
        applied = [self._pending.pop(uid) for uid in step.update_ids if uid in self._pending]
        staleness = [e.staleness for e in applied if e.staleness is not None]
        params = [p.copy() for p in self.aggregator.params]
        self._committer.submit(
            CommitJob(
                task_id=self.state.id,
                version=step.version,
                params=pack(encode_tensors(params)),
                position=self.position,
                applied=applied,
                mean_staleness=sum(staleness) / len(staleness) if staleness else None,
                params_arrays=params,
            ),
            self.aggregator.snapshot(),
        )

    # -- sync rounds ------------------------------------------------------------------
    def admit_to_round(self, device_id: str, now: float) -> RoundState | None:
        """Select a device into the open round; None when the cohort is full."""
        agg = self.aggregator
        if not isinstance(agg, SyncRoundAggregator):
            raise AsyncflError("admit_to_round needs a sync-mode task")
        current = agg.current_round or agg.start_round(now)
        if current.version > self.state.version:
            return None  # the round's model is still being committed: nothing to hand out
        if not agg.select(device_id, now):
            return None
        after = agg.current_round
        if after is None or after.selected == current.selected:
            return None  # already in this round's cohort: one session per device a round
        return after

    def _drop(self, entries: list[LedgerEntry]) -> None:
        if entries:
            self.state.dropped += len(entries)
            self._record_rejections(entries)

    async def _tick_rounds(self) -> None:
        agg = self.aggregator
        assert isinstance(agg, SyncRoundAggregator)
        while True:
            await asyncio.sleep(SYNC_TICK_S)
            now = self._clock()
            current = agg.current_round
            if current is not None and now >= current.deadline:
                in_round = agg.pending_ids
                step = agg.close_if_expired(now)
                if step is not None:
                    self._cut_version(step)
                else:  # abandoned: what it had folded is dropped, never applied
                    abandoned = [self._pending.pop(u) for u in in_round if u in self._pending]
                    self._drop(
                        [replace(e, status="dropped", reason="round_abandoned") for e in abandoned]
                    )
            if agg.current_round is None:
                agg.start_round(now)


def _entry(update: QueuedUpdate, status: str, **fields: Any) -> LedgerEntry:
    return LedgerEntry(
        id=update.update_id,
        task_id=update.task_id,
        device_id=update.device_id,
        created_at=update.created_at,
        status=status,
        base_version=update.base_version,
        num_examples=update.num_examples,
        **cost_fields(update.metrics, len(update.body)),  # fleet hook: what it cost
        **fields,
    )


async def run_until_cancelled(coro: Awaitable[None], name: str) -> None:
    """Run a background loop, logging (not swallowing) a crash."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except AsyncflError as exc:
        logger.error("%s stopped: %s", name, exc)
        raise
