"""Batched, off-path ledger writes for refusals (applied rows go with version commits)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.errors import StorageError
from server.storage.ledger import LedgerRepository
from server.storage.records import LedgerEntry

logger = logging.getLogger(__name__)


class LedgerWriter:
    def __init__(self, ledger: LedgerRepository, *, interval_s: float = 0.5, batch: int = 1000):
        self._ledger = ledger
        self._interval_s = interval_s
        self._batch = batch
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
                await self._ledger.record(batch)
            except StorageError as exc:
                self._pending[:0] = batch  # keep them for the next flush
                raise exc

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except StorageError as exc:
                logger.warning("ledger flush failed, will retry: %s", exc)
