"""Batched, off-path ledger writes for refusals (applied rows go with version commits).

A row is never dropped. A batch the database cannot take right now (it is down, busy or
locked) stays pending and is tried again. A batch the database refuses for its contents
(a value out of range, a constraint) is split in halves until the refused rows are found;
each such row is written again without its numeric detail (id, task, device, status and
reason kept, so exactly-once accounting by id still holds) and kept whole in a quarantine
file (JSON lines) for an operator to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from server.errors import StorageError
from server.storage.ledger import LedgerRepository, RowsRefused
from server.storage.records import LedgerEntry

logger = logging.getLogger(__name__)

# the fields a refused row keeps when it is written again
_KEPT = ("id", "task_id", "device_id", "created_at", "status", "reason")


def stripped(entry: LedgerEntry) -> LedgerEntry:
    """The entry with its optional numeric detail dropped (what a refused row is kept as)."""
    kept = {name: getattr(entry, name) for name in _KEPT}
    return LedgerEntry(**kept)


class LedgerWriter:
    def __init__(
        self,
        ledger: LedgerRepository,
        *,
        interval_s: float = 0.5,
        batch: int = 1000,
        quarantine: Path | None = None,
        on_quarantine: Callable[[LedgerEntry], None] | None = None,
    ):
        self._ledger = ledger
        self._interval_s = interval_s
        self._batch = batch
        self._quarantine = quarantine
        self._on_quarantine = on_quarantine
        self._pending: list[LedgerEntry] = []
        self._wake = asyncio.Event()

    def add(self, entries: list[LedgerEntry]) -> None:
        self._pending.extend(entries)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                await self._write(batch)
            except StorageError:
                self._pending[:0] = batch  # the database is unreachable: try again later
                raise

    async def _write(self, batch: list[LedgerEntry]) -> None:
        """Write a batch, isolating rows the database refuses; raises only if it is down."""
        try:
            await self._ledger.record(batch)
            return
        except RowsRefused:
            if len(batch) > 1:
                half = len(batch) // 2
                await self._write(batch[:half])
                await self._write(batch[half:])
                return
        (entry,) = batch
        self._keep(entry)
        try:
            await self._ledger.record([stripped(entry)])
        except RowsRefused:
            logger.error("ledger row %s refused even without its detail", entry.id)

    def _keep(self, entry: LedgerEntry) -> None:
        logger.error("ledger row %s refused by the database; quarantined", entry.id)
        if self._on_quarantine is not None:
            self._on_quarantine(entry)
        if self._quarantine is None:
            return
        self._quarantine.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(dataclasses.asdict(entry), default=repr)
        with self._quarantine.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except StorageError as exc:
                logger.warning("ledger flush failed, will retry: %s", exc)
