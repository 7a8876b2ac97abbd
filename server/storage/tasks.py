"""Tasks and their committed model versions, including the atomic, fenced version commit."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.errors import Conflict, NotFound, StorageError
from server.storage.database import storage_error
from server.storage.dialect import upsert
from server.storage.records import LedgerEntry, TaskRecord, VersionRecord
from server.storage.schema import model_versions, tasks, updates


class StaleCommit(Conflict):
    """A version commit lost the race: the head moved or a newer leader holds the task."""

    code = "stale_commit"


class TaskRepository:
    """Tasks, model versions and the fenced commit that ties a version to its updates."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, task: TaskRecord, initial: VersionRecord) -> None:
        """Insert a task and its version 0 in one transaction."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(tasks.insert().values(**asdict(task)))
                await conn.execute(model_versions.insert().values(**asdict(initial)))
        except IntegrityError as exc:
            raise Conflict(f"task {task.id!r} already exists", code="task_exists") from exc
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot create task {task.id!r}: {exc}", exc) from exc

    async def get(self, task_id: str) -> TaskRecord:
        rows = await self._select(tasks.select().where(tasks.c.id == task_id))
        if not rows:
            raise NotFound(f"unknown task {task_id!r}", code="unknown_task")
        return TaskRecord(**rows[0])

    async def all(self) -> list[TaskRecord]:
        return [TaskRecord(**r) for r in await self._select(tasks.select().order_by(tasks.c.id))]

    async def claim_fence(self, task_id: str) -> int:
        """Take the next fencing token for the task: from now on only commits carrying it
        are accepted, so a previous leader can no longer commit even if it does not know
        it lost its lease."""
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    tasks.update()
                    .where(tasks.c.id == task_id)
                    .values(fence=tasks.c.fence + 1)
                    .returning(tasks.c.fence)
                )
                row = result.first()
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot claim task {task_id!r}: {exc}", exc) from exc
        if row is None:
            raise NotFound(f"unknown task {task_id!r}", code="unknown_task")
        return int(row[0])

    async def set_status(self, task_id: str, status: str) -> None:
        await self._write(tasks.update().where(tasks.c.id == task_id).values(status=status))

    async def version(self, task_id: str, version: int) -> VersionRecord:
        rows = await self._select(
            model_versions.select().where(
                model_versions.c.task_id == task_id, model_versions.c.version == version
            )
        )
        if not rows:
            raise NotFound(f"task {task_id!r} has no version {version}", code="unknown_version")
        return VersionRecord(**rows[0])

    async def params_blob(self, task_id: str, version: int) -> str:
        """The blob of a version's parameters; NotFound when the version has none (it was
        superseded in the commit that made it, never published)."""
        record = await self.version(task_id, version)
        if record.params_blob is None:
            raise NotFound(
                f"task {task_id!r}: version {version} was superseded in the commit that made "
                "it and never published; its parameters are not kept",
                code="params_not_kept",
            )
        return record.params_blob

    async def latest_version(self, task_id: str) -> VersionRecord:
        task = await self.get(task_id)
        return await self.version(task_id, task.current_version)

    async def versions(
        self, task_id: str, *, limit: int = 100, before: int | None = None
    ) -> list[VersionRecord]:
        query = model_versions.select().where(model_versions.c.task_id == task_id)
        if before is not None:
            query = query.where(model_versions.c.version < before)
        query = query.order_by(model_versions.c.version.desc()).limit(limit)
        return [VersionRecord(**r) for r in await self._select(query)]

    async def set_metrics(self, task_id: str, version: int, metrics: dict[str, object]) -> None:
        await self._write(
            model_versions.update()
            .where(model_versions.c.task_id == task_id, model_versions.c.version == version)
            .values(metrics=metrics)
        )

    async def commit_version(self, record: VersionRecord, applied: Sequence[LedgerEntry]) -> None:
        """Atomically move the task's head to ``record.version``.

        Refused with :class:`StaleCommit` when the head is not ``version - 1`` or the
        task's fencing token is not ``record.fence`` (a newer leader claimed the task);
        then nothing is written.
        """
        await self.commit_versions([(record, applied)])

    async def commit_versions(
        self, commits: Sequence[tuple[VersionRecord, Sequence[LedgerEntry]]]
    ) -> None:
        """Commit consecutive versions of one task in one transaction: all or none.

        The head moves from ``first.version - 1`` to the last version under the same
        checks as :meth:`commit_version`; each version's updates are marked applied to it.
        """
        if not commits:
            return
        first, last = commits[0][0], commits[-1][0]
        for i, (record, _applied) in enumerate(commits):
            if (record.task_id, record.version, record.fence) != (
                first.task_id,
                first.version + i,
                first.fence,
            ):
                raise ValueError("a commit batch must be consecutive versions of one task")
        try:
            async with self._engine.begin() as conn:
                moved = await conn.execute(
                    tasks.update()
                    .where(
                        tasks.c.id == first.task_id,
                        tasks.c.current_version == first.version - 1,
                        tasks.c.fence == first.fence,
                    )
                    .values(current_version=last.version, fence=first.fence)
                )
                if moved.rowcount != 1:
                    raise StaleCommit(
                        f"task {first.task_id!r}: commit of version {_span(first, last)} "
                        f"with fence {first.fence} refused (head moved or newer leader)"
                    )
                await conn.execute(model_versions.insert(), [r.as_row() for r, _ in commits])
                await _mark_applied(
                    conn,
                    [(entry, record.version) for record, applied in commits for entry in applied],
                    _span(first, last),
                )
        except StaleCommit:
            raise
        except SQLAlchemyError as exc:
            message = f"commit of version {_span(first, last)} failed: {exc}"
            raise storage_error(message, exc) from exc

    async def _select(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        try:
            async with self._engine.connect() as conn:
                result = await conn.execute(query)
                return [dict(r._mapping) for r in result]
        except SQLAlchemyError as exc:
            raise storage_error(f"database read failed: {exc}", exc) from exc

    async def _write(self, statement: sa.Executable) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
        except SQLAlchemyError as exc:
            raise storage_error(f"database write failed: {exc}", exc) from exc


def _applied_row(entry: LedgerEntry, version: int) -> dict[str, Any]:
    row = entry.as_row()
    row["status"], row["applied_version"] = "applied", version
    return row


def _span(first: VersionRecord, last: VersionRecord) -> str:
    return str(first.version) if first is last else f"{first.version}-{last.version}"


@functools.cache
def _mark_applied_statement(dialect_name: str) -> Any:
    """Built once per dialect: building it (its ``excluded`` columns above all) cost more
    than executing it, once per group commit."""
    stmt = upsert(dialect_name, updates)
    return stmt.on_conflict_do_update(
        index_elements=[updates.c.id],
        set_={"status": "applied", "applied_version": stmt.excluded.applied_version},
        where=updates.c.applied_version.is_(None),
    ).returning(updates.c.id)


async def _mark_applied(
    conn: AsyncConnection, applied: Sequence[tuple[LedgerEntry, int]], span: str
) -> None:
    """Record each entry as applied to its version, in one statement; an update applied
    before is a bug."""
    if not applied:
        return
    if conn.dialect.name == "sqlite":
        # one executemany of plain tuples: the compiled statement's per-row work (binding
        # 15 columns, RETURNING) cost the event loop ~11 us more a row, once an update
        sql, names = _mark_applied_sqlite(conn.dialect)
        rows = [_applied_values(entry, version, names) for entry, version in applied]
        written = (await conn.exec_driver_sql(sql, rows)).rowcount
    else:  # asyncpg reports no row count for an executemany: count the RETURNING rows
        dict_rows = [_applied_row(entry, version) for entry, version in applied]
        stmt = _mark_applied_statement(conn.dialect.name)
        written = len((await conn.execute(stmt, dict_rows)).all())
    if written != len(applied):
        raise StorageError(
            f"version {span}: {len(applied) - written} update(s) were already applied"
        )


@functools.cache
def _mark_applied_sqlite(dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    """The SQLite upsert as driver SQL (qmark) and the column of each parameter; its
    row count is the rows inserted or moved to applied (an update already applied is
    left alone by the WHERE and not counted)."""
    stmt = upsert(dialect.name, updates)
    stmt = stmt.on_conflict_do_update(
        index_elements=[updates.c.id],
        set_={
            "status": sa.literal_column("'applied'"),
            "applied_version": stmt.excluded.applied_version,
        },
        where=updates.c.applied_version.is_(None),
    )
    compiled = stmt.compile(dialect=dialect, column_keys=[c.key for c in updates.c])
    assert compiled.positiontup is not None
    return str(compiled), tuple(compiled.positiontup)


def _applied_values(entry: LedgerEntry, version: int, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(
        version if n == "applied_version" else "applied" if n == "status" else getattr(entry, n)
        for n in names
    )
