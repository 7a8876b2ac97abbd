"""The two writes the fleet figures need, batched off the request path.

- :class:`EvaluationWriter`: federated evaluations, one row per session;
- :class:`CheckinTally`: check-ins by result per time bucket, taken from the process'
  ``asyncfl_checkins`` counter (the check-in handler already counts every outcome
  there), so each API process adds what it counted since its last flush.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from prometheus_client import Counter as PromCounter

from server.errors import StorageError
from server.fleet.rollup import BUCKET_S
from server.storage.fleet import FleetRepository
from server.storage.records import EvaluationRecord

logger = logging.getLogger(__name__)

MAX_PENDING = 100_000  # evaluations kept while the database is unreachable


class EvaluationWriter:
    def __init__(self, repo: FleetRepository) -> None:
        self._repo = repo
        self._pending: list[EvaluationRecord] = []
        self.written: Counter[str] = Counter()  # by task: rows the database has now

    def add(self, record: EvaluationRecord) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.append(record)
        else:
            logger.warning("evaluation of session %s not recorded: backlog full", record.id)

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self._repo.record_evaluations(batch)
        except StorageError:
            self._pending[:0] = batch  # next flush tries again
            raise
        self.written.update(record.task_id for record in batch)


def counter_values(counter: PromCounter) -> dict[tuple[str, ...], float]:
    """A labelled counter's current values, by label values."""
    values: dict[tuple[str, ...], float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                values[tuple(sample.labels.values())] = sample.value
    return values


class CheckinTally:
    """Turns the growth of a ``(task, result)`` counter into per-bucket increments."""

    def __init__(self, counter: PromCounter, clock: Callable[[], float]) -> None:
        self._counter = counter
        self._clock = clock
        self._seen: dict[tuple[str, ...], float] = {}
        self._pending: dict[tuple[str, int, str], int] = {}

    def collect(self) -> None:
        """Attribute what was counted since the last call to the current bucket."""
        now = self._clock()
        bucket = int(now) - int(now) % BUCKET_S
        current = counter_values(self._counter)
        for labels, value in current.items():
            grown = int(value - self._seen.get(labels, 0.0))
            if grown > 0 and len(labels) == 2:
                key = (labels[0], bucket, labels[1])
                self._pending[key] = self._pending.get(key, 0) + grown
        self._seen = current

    async def flush(self, repo: FleetRepository) -> list[tuple[str, int, str, int]]:
        """Write what was counted since the last flush; returns the rows written,
        ``(task, bucket, result, count)``."""
        self.collect()
        batch, self._pending = self._pending, {}
        rows = [(t, b, r, n) for (t, b, r), n in sorted(batch.items())]
        try:
            await repo.add_checkins(rows)
        except StorageError:
            for key, count in batch.items():  # keep them for the next flush
                self._pending[key] = self._pending.get(key, 0) + count
            raise
        return rows
