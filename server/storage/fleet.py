"""Reads behind the fleet figures (grouped in the database) and their two small writes.

Every read is bounded: by version (``applied_version`` after what was already folded,
index ``(task_id, applied_version)``) or by time (refusals' ``created_at`` in a trailing
window, index ``(task_id, status, created_at)``; check-in ``bucket``, the primary key), so
the dashboard never scans a task's whole ledger after its first read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.fleet.rows import (
    OLDER,
    AppliedGroup,
    CheckinBucket,
    EvalGroup,
    LedgerBucket,
    TierDevices,
    VersionRow,
)
from server.storage.database import storage_error
from server.storage.dialect import upsert
from server.storage.records import EvaluationRecord
from server.storage.schema import checkin_counts, devices, evaluations, model_versions, updates


def _driver_thread_clock(raw: Any) -> int | None:
    """The CPU clock of the thread an aiosqlite connection runs its SQL on, if any."""
    thread = getattr(getattr(raw, "driver_connection", None), "_thread", None)
    ident = getattr(thread, "ident", None)
    if not isinstance(ident, int):
        return None
    try:
        return time.pthread_getcpuclockid(ident)
    except OSError:
        return None


# The tier a device reported at enrollment: device_info.tier, else device_info.device_class.
TIER = sa.func.coalesce(
    devices.c.info["tier"].as_string(), devices.c.info["device_class"].as_string()
).label("tier")


def _build(cls: Any, values: Sequence[Any]) -> Any:
    """A row dataclass from a result row, numbers made plain ``int``/``float``
    (PostgreSQL sums integers as ``numeric``, which arrives as ``Decimal``)."""
    kinds = [str(f.type) for f in fields(cls)]
    out = []
    for kind, value in zip(kinds, values, strict=True):
        if value is not None and kind.split(" ")[0] == "int":
            value = int(value)
        elif value is not None and kind.split(" ")[0] == "float":
            value = float(value)
        out.append(value)
    return cls(*out)


def _sum(column: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(column), 0)


_UNMETERED = sa.case((updates.c.energy_j.is_(None), updates.c.train_s), else_=None)
_APPLIED_SUMS = (
    sa.func.count().label("updates"),
    _sum(updates.c.staleness).label("staleness_sum"),
    sa.func.count(updates.c.staleness).label("staleness_n"),
    _sum(updates.c.num_examples).label("examples"),
    _sum(updates.c.train_s).label("train_s"),
    sa.func.count(updates.c.train_s).label("timed"),
    _sum(updates.c.energy_j).label("metered_j"),
    sa.func.count(updates.c.energy_j).label("metered"),
    _sum(_UNMETERED).label("unmetered_train_s"),
    sa.func.count(_UNMETERED).label("unmetered_timed"),
    _sum(updates.c.bytes_up).label("bytes_up"),
    _sum(updates.c.bytes_down).label("bytes_down"),
)
_WITH_DEVICES = updates.outerjoin(devices, devices.c.id == updates.c.device_id)


class FleetRepository:
    def __init__(
        self, engine: AsyncEngine, conn: AsyncConnection | None = None, clock: int | None = None
    ) -> None:
        self._engine = engine
        self._conn = conn
        self._dialect = engine.dialect.name
        self._driver_clock = clock

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[FleetRepository]:
        """This repository on one connection for several reads (a refresh makes ~8)."""
        try:
            async with self._engine.connect() as conn:
                clock = _driver_thread_clock(await conn.get_raw_connection())
                yield FleetRepository(self._engine, conn, clock)
        except SQLAlchemyError as exc:
            raise storage_error(f"fleet read failed ({type(exc).__name__})", exc) from exc

    def driver_cpu_s(self) -> float:
        """CPU seconds the database driver's own thread has used (aiosqlite runs every
        connection's SQL on a thread of its own); 0 for a driver on the event loop
        (asyncpg). Only meaningful on a :meth:`reading` repository, whose connection no
        one else uses meanwhile: the growth across the reads is what they cost."""
        if self._driver_clock is None:
            return 0.0
        try:
            return time.clock_gettime(self._driver_clock)
        except OSError:  # the thread ended (the connection was closed)
            return 0.0

    # -- applied updates ----------------------------------------------------------------
    async def applied(self, task_id: str, after: int, upto: int) -> list[AppliedGroup]:
        """Applied updates of versions in ``(after, upto]`` by version and tier."""
        query = (
            sa.select(updates.c.applied_version, TIER, *_APPLIED_SUMS)
            .select_from(_WITH_DEVICES)
            .where(*self._applied_window(task_id, after, upto))
            .group_by(updates.c.applied_version, TIER)
        )
        return [_build(AppliedGroup, row) for row in await self._rows(query)]

    async def applied_before(self, task_id: str, upto: int) -> list[AppliedGroup]:
        """Applied updates of every version ``<= upto``, by tier only (version OLDER)."""
        query = (
            sa.select(TIER, *_APPLIED_SUMS)
            .select_from(_WITH_DEVICES)
            .where(*self._applied_window(task_id, OLDER, upto))
            .group_by(TIER)
        )
        return [_build(AppliedGroup, (OLDER, *row)) for row in await self._rows(query)]

    async def applied_devices(
        self, task_id: str, after: int, upto: int
    ) -> list[tuple[str, str | None]]:
        """Distinct (device, tier) that contributed to versions in ``(after, upto]``."""
        query = (
            sa.select(updates.c.device_id, TIER)
            .select_from(_WITH_DEVICES)
            .where(*self._applied_window(task_id, after, upto))
            .distinct()
        )
        return [(str(r[0]), r[1]) for r in await self._rows(query)]

    async def arrivals(
        self, task_id: str, after: int, upto: int, size: int
    ) -> list[tuple[int | None, int, int]]:
        """Applied updates of versions in ``(after, upto]`` as ``(staleness, bucket of
        arrival, count)``: the staleness histogram and the accepted timeline at once."""
        bucket = self._bucket(updates.c.created_at, size)
        query = (
            sa.select(updates.c.staleness, bucket, sa.func.count())
            .where(*self._applied_window(task_id, after, upto))
            .group_by(updates.c.staleness, bucket)
        )
        return [
            (None if r[0] is None else int(r[0]), int(r[1]), int(r[2]))
            for r in await self._rows(query)
        ]

    async def applied_recent(
        self, task_id: str, after: int, upto: int, size: int
    ) -> tuple[list[AppliedGroup], list[tuple[str, str | None]], list[tuple[int | None, int, int]]]:
        """:meth:`applied`, :meth:`applied_devices` and :meth:`arrivals` of a few new
        versions at once: one query for their updates, grouped here (a commit's K rows
        cost less to group than two more round trips through the driver)."""
        query = (
            sa.select(
                updates.c.applied_version,
                TIER,
                updates.c.device_id,
                updates.c.staleness,
                updates.c.created_at,
                updates.c.num_examples,
                updates.c.train_s,
                updates.c.energy_j,
                updates.c.bytes_up,
                updates.c.bytes_down,
            )
            .select_from(_WITH_DEVICES)
            .where(*self._applied_window(task_id, after, upto))
        )
        sums: dict[tuple[int, str | None], list[Any]] = {}
        devices: set[tuple[str, str | None]] = set()
        arrivals: dict[tuple[int | None, int], int] = {}
        for (
            version,
            tier,
            device,
            staleness,
            created,
            examples,
            train_s,
            energy_j,
            up,
            down,
        ) in await self._rows(query):
            cell = sums.setdefault(
                (int(version), tier), [0, 0.0, 0, 0, 0.0, 0, 0.0, 0, 0.0, 0, 0, 0]
            )
            cell[0] += 1
            if staleness is not None:
                cell[1] += staleness
                cell[2] += 1
            cell[3] += examples or 0
            if train_s is not None:
                cell[4] += train_s
                cell[5] += 1
            if energy_j is not None:
                cell[6] += energy_j
                cell[7] += 1
            elif train_s is not None:
                cell[8] += train_s
                cell[9] += 1
            cell[10] += up or 0
            cell[11] += down or 0
            devices.add((str(device), tier))
            key = (None if staleness is None else int(staleness), int(created // size) * size)
            arrivals[key] = arrivals.get(key, 0) + 1
        groups = [AppliedGroup(v, t, *cell) for (v, t), cell in sums.items()]
        return groups, sorted(devices, key=str), [(s, b, n) for (s, b), n in arrivals.items()]

    @staticmethod
    def _applied_window(task_id: str, after: int, upto: int) -> tuple[Any, ...]:
        return (
            updates.c.task_id == task_id,
            updates.c.applied_version > after,
            updates.c.applied_version <= upto,
        )

    # -- versions and evaluations -------------------------------------------------------
    async def versions(self, task_id: str, after: int, limit: int) -> list[VersionRow]:
        """The newest ``limit`` versions after ``after``, oldest first."""
        query = (
            sa.select(
                model_versions.c.version,
                model_versions.c.created_at,
                model_versions.c.num_updates,
                model_versions.c.mean_staleness,
                model_versions.c.metrics,
            )
            .where(model_versions.c.task_id == task_id, model_versions.c.version > after)
            .order_by(model_versions.c.version.desc())
            .limit(limit)
        )
        return [_build(VersionRow, row) for row in reversed(await self._rows(query))]

    async def evaluations(self, task_id: str, from_version: int) -> list[EvalGroup]:
        scored = sa.case((evaluations.c.accuracy.is_not(None), evaluations.c.num_examples))
        query = (
            sa.select(
                evaluations.c.version,
                TIER,
                sa.func.count(),
                _sum(evaluations.c.num_examples),
                _sum(evaluations.c.loss * evaluations.c.num_examples),
                _sum(evaluations.c.accuracy * evaluations.c.num_examples),
                _sum(scored),
            )
            .select_from(evaluations.outerjoin(devices, devices.c.id == evaluations.c.device_id))
            .where(evaluations.c.task_id == task_id, evaluations.c.version >= from_version)
            .group_by(evaluations.c.version, TIER)
        )
        return [_build(EvalGroup, row) for row in await self._rows(query)]

    async def record_evaluations(self, rows: Sequence[EvaluationRecord]) -> None:
        """Insert evaluations; a session already recorded keeps its row."""
        if rows:
            stmt = upsert(self._dialect, evaluations).on_conflict_do_nothing(
                index_elements=[evaluations.c.id]
            )
            await self._write(stmt, [asdict(r) for r in rows])

    # -- time buckets -------------------------------------------------------------------
    def _bucket(self, column: Any, size: int) -> Any:
        scaled = column / size
        whole = sa.func.floor(scaled) if self._dialect == "postgresql" else scaled
        return (sa.cast(whole, sa.BigInteger) * size).label("bucket")

    async def refusals(self, task_id: str, since: float, size: int) -> list[LedgerBucket]:
        """Updates rejected or dropped since ``since``, per ``size``-second bucket of
        arrival (index ``(task_id, status, created_at)``)."""
        bucket = self._bucket(updates.c.created_at, size)
        query = (
            sa.select(bucket, updates.c.status, updates.c.reason, sa.func.count())
            .where(
                updates.c.task_id == task_id,
                updates.c.status.in_(("rejected", "dropped")),
                updates.c.created_at >= since,
            )
            .group_by(bucket, updates.c.status, updates.c.reason)
        )
        return [
            LedgerBucket(int(r[0]), str(r[1]), r[2], int(r[3])) for r in await self._rows(query)
        ]

    async def checkins(self, task_id: str, since: int) -> list[CheckinBucket]:
        query = sa.select(
            checkin_counts.c.bucket, checkin_counts.c.result, checkin_counts.c.count
        ).where(checkin_counts.c.task_id == task_id, checkin_counts.c.bucket >= since)
        return [CheckinBucket(int(r[0]), str(r[1]), int(r[2])) for r in await self._rows(query)]

    async def checkins_before(self, task_id: str, before: int) -> list[CheckinBucket]:
        """Check-ins by result over every bucket before ``before`` (bucket 0)."""
        query = (
            sa.select(checkin_counts.c.result, _sum(checkin_counts.c.count))
            .where(checkin_counts.c.task_id == task_id, checkin_counts.c.bucket < before)
            .group_by(checkin_counts.c.result)
        )
        return [CheckinBucket(0, str(r[0]), int(r[1])) for r in await self._rows(query)]

    async def add_checkins(self, rows: Sequence[tuple[str, int, str, int]]) -> None:
        """Add ``(task, bucket, result, count)`` to the stored counts (every API process
        adds its own, so concurrent writers sum instead of overwriting)."""
        if not rows:
            return
        stmt = upsert(self._dialect, checkin_counts)
        stmt = stmt.on_conflict_do_update(
            index_elements=[
                checkin_counts.c.task_id,
                checkin_counts.c.bucket,
                checkin_counts.c.result,
            ],
            set_={"count": checkin_counts.c.count + stmt.excluded["count"]},
        )
        await self._write(
            stmt, [{"task_id": t, "bucket": b, "result": r, "count": n} for t, b, r, n in rows]
        )

    # -- devices ------------------------------------------------------------------------
    async def enrolled_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(devices)
        return int((await self._rows(query))[0][0])

    async def enrolled_by_tier(self) -> list[TierDevices]:
        query = sa.select(TIER, sa.func.count()).select_from(devices).group_by(TIER)
        return [TierDevices(r[0], int(r[1])) for r in await self._rows(query)]

    # -- plumbing -----------------------------------------------------------------------
    async def _rows(self, query: sa.Select[Any]) -> list[Any]:
        try:
            if self._conn is not None:
                return list(await self._conn.execute(query))
            async with self._engine.connect() as conn:
                return list(await conn.execute(query))
        except SQLAlchemyError as exc:
            raise storage_error(f"fleet read failed ({type(exc).__name__})", exc) from exc

    async def _write(self, stmt: Any, rows: list[dict[str, Any]]) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)
        except SQLAlchemyError as exc:
            raise storage_error(f"fleet write failed ({type(exc).__name__})", exc) from exc
