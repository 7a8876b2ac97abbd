"""What a task's leader does whatever feeds it: hold the aggregator, cut versions, run rounds.

The embedded leader (:class:`~server.tasks.local.LocalAggregation`) folds each upload as
it arrives; the distributed one (:class:`~server.tasks.worker.PartialWorker`) merges the
partials API replicas pre-aggregated. Both keep the ledger entry of every update in the
open buffer, turn each step into a :class:`~server.tasks.commits.CommitJob` (the
version's parameters and the entries it applied), and, in sync mode, tick the rounds:
a round that reaches its deadline steps short or is abandoned, and a new one opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from server.aggregation import (
    FedBuffAggregator,
    FoldResult,
    RoundState,
    StepResult,
    SyncRoundAggregator,
)
from server.errors import AsyncflError
from server.storage.records import LedgerEntry
from server.tasks.commits import CommitJob
from server.tasks.state import TaskState

logger = logging.getLogger(__name__)

Aggregator = FedBuffAggregator | SyncRoundAggregator
SYNC_TICK_S = 0.25


class LeaderBase:
    def __init__(
        self,
        state: TaskState,
        aggregator: Aggregator,
        *,
        record_drops: Callable[[list[LedgerEntry]], None],
        on_fold: Callable[[FoldResult, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.aggregator = aggregator
        self._record_drops = record_drops
        self._on_fold = on_fold
        self._clock = clock
        # ledger entries of the updates in the open buffer, by id
        self.pending: dict[str, LedgerEntry] = {}
        self.folded_since_start = 0

    @property
    def buffered(self) -> int:
        return self.aggregator.buffered

    def knows(self, update_id: str) -> bool:
        """Folded into the open buffer or among the recently applied."""
        return self.aggregator.has_folded(update_id)

    def _job(self, step: StepResult, position: str, release_id: str | None = None) -> CommitJob:
        # the version's ledger rows say "applied" and the version (see commit_versions)
        applied = [self.pending.pop(uid) for uid in step.update_ids if uid in self.pending]
        staleness = [e.staleness for e in applied if e.staleness is not None]
        params = [p.copy() for p in self.aggregator.params]
        return CommitJob(
            task_id=self.state.id,
            version=step.version,
            position=position,
            applied=applied,
            mean_staleness=sum(staleness) / len(staleness) if staleness else None,
            params_arrays=params,
            release_id=release_id,
        )

    def _on_step(self, step: StepResult) -> None:
        """A version was stepped (by a fold, a merge or a round's deadline)."""
        raise NotImplementedError

    def _drop(self, entries: list[LedgerEntry]) -> None:
        if entries:
            self.state.dropped += len(entries)
            self._record_drops(entries)

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
        self._changed()
        return after

    def _changed(self) -> None:
        """The aggregator's state changed outside a fold (a round opened, closed or
        selected a device): subclasses that checkpoint it take note."""

    async def tick_rounds(self) -> None:
        agg = self.aggregator
        if not isinstance(agg, SyncRoundAggregator):
            return
        if agg.current_round is None:
            agg.start_round(self._clock())
            self._changed()
        while True:
            await asyncio.sleep(SYNC_TICK_S)
            self.close_due_round(self._clock())

    def close_due_round(self, now: float) -> None:
        agg = self.aggregator
        assert isinstance(agg, SyncRoundAggregator)
        current = agg.current_round
        if current is not None and now >= current.deadline:
            in_round = agg.open_ids
            sealed = len(agg.pending_releases)
            step = agg.close_if_expired(now)
            if step is not None:
                self._on_step(step)
            elif len(agg.pending_releases) > sealed:
                pass  # masked: sealed for its release, which steps it
            else:  # abandoned: what it had folded is dropped, never applied
                abandoned = [self.pending.pop(u) for u in in_round if u in self.pending]
                self._drop(
                    [replace(e, status="dropped", reason="round_abandoned") for e in abandoned]
                )
            self._changed()
        if agg.current_round is None:
            agg.start_round(now)
            self._changed()


def entry(
    update_id: str,
    task_id: str,
    device_id: str,
    created_at: float,
    base_version: int,
    num_examples: int,
    **fields: Any,
) -> LedgerEntry:
    """An update's ledger entry while it waits in the open buffer."""
    return LedgerEntry(
        id=update_id,
        task_id=task_id,
        device_id=device_id,
        created_at=created_at,
        status="accepted",
        base_version=base_version,
        num_examples=num_examples,
        **fields,
    )


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
