"""The update ledger: one row per update, accepted, applied or rejected with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import StorageError
from server.storage.database import storage_error
from server.storage.dialect import upsert
from server.storage.records import LedgerEntry
from server.storage.schema import updates


class RowsRefused(StorageError):
    """The database refused the rows themselves (a value out of range, a constraint):
    sending the same rows again fails again."""


def _refuses_rows(exc: BaseException) -> bool:
    """Whether an error is about the rows (a value, a constraint), not the database being
    unreachable, busy or unmigrated: sqlite3 raises OverflowError past 64 bits, asyncpg a
    DataError (a ValueError) that SQLAlchemy wraps in a plain DBAPIError."""
    seen: BaseException | None = exc
    for _ in range(8):  # the driver's error, SQLAlchemy's adapter, SQLAlchemy's wrapper
        if seen is None:
            return False
        if isinstance(seen, (DataError, IntegrityError, ArithmeticError, ValueError, TypeError)):
            return True
        inner = seen.orig if isinstance(seen, DBAPIError) else getattr(seen, "orig", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return False


class LedgerRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, entries: Sequence[LedgerEntry]) -> None:
        """Insert entries; an id already in the ledger keeps its row (idempotent)."""
        if not entries:
            return
        try:
            async with self._engine.begin() as conn:
                stmt = upsert(conn.dialect.name, updates).on_conflict_do_nothing(
                    index_elements=[updates.c.id]
                )
                await conn.execute(stmt, [asdict(e) for e in entries])
        except (SQLAlchemyError, ArithmeticError, ValueError, TypeError) as exc:
            if _refuses_rows(exc):
                raise RowsRefused(f"ledger rows refused ({type(exc).__name__})") from exc
            raise storage_error(f"ledger write failed ({type(exc).__name__})", exc) from exc

    async def counts(self, task_id: str) -> dict[str, int]:
        query = (
            sa.select(updates.c.status, sa.func.count())
            .where(updates.c.task_id == task_id)
            .group_by(updates.c.status)
        )
        return {str(r[0]): int(r[1]) for r in await self._rows(query)}

    async def rejected_by_reason(self, task_id: str) -> dict[str, int]:
        query = (
            sa.select(updates.c.reason, sa.func.count())
            .where(updates.c.task_id == task_id, updates.c.status == "rejected")
            .group_by(updates.c.reason)
        )
        return {str(r[0]): int(r[1]) for r in await self._rows(query)}

    async def ids_since(self, task_id: str, since: float) -> set[str]:
        """Ids of updates accepted or applied since ``since`` (UNIX seconds)."""
        query = sa.select(updates.c.id).where(
            updates.c.task_id == task_id,
            updates.c.created_at >= since,
            updates.c.status != "rejected",
        )
        return {str(r[0]) for r in await self._rows(query)}

    async def contains(self, update_id: str) -> bool:
        """Whether an update was accepted or applied (not refused)."""
        query = sa.select(updates.c.id).where(
            updates.c.id == update_id, updates.c.status != "rejected"
        )
        return bool(await self._rows(query))

    async def entries(self, task_id: str) -> list[LedgerEntry]:
        query = updates.select().where(updates.c.task_id == task_id).order_by(updates.c.created_at)
        return [LedgerEntry(**dict(r._mapping)) for r in await self._rows(query)]

    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                return list(await conn.execute(query))
        except SQLAlchemyError as exc:
            raise storage_error(f"ledger read failed: {exc}", exc) from exc
