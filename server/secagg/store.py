"""The mask service's own store: seeds, and the releases that used them.

Never the aggregator's database: the mask service runs apart (another machine, another
operator), with its own SQLite file (embedded) or PostgreSQL database. Its schema is
small and versioned by :data:`SCHEMA` (created at start; no migration history yet).

Rules it keeps, each in one transaction:

- a seed is registered once per (task, update); the same sealed bytes again are
  accepted again (a retried upload), anything else under the same id is refused;
- a release names (update, integer weight) pairs: refused if it holds fewer than the
  threshold, from fewer distinct devices, names an update it holds no seed for, or one
  that an earlier, different release used; the same release again gets the same
  answer (an aggregator that crashed after a release finishes its commit);
- after the version that used a release is committed, its seeds are deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Conflict, StorageError, UpdateRejected
from server.storage.database import storage_error

__all__ = ["ReleaseRefused", "SeedStore", "metadata"]

SCHEMA = 1
metadata = sa.MetaData()

seeds = sa.Table(
    "secagg_seeds",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("update_id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("seed", sa.LargeBinary, nullable=False),
    sa.Column("sealed_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("release_id", sa.String(64), nullable=True),
)

releases = sa.Table(
    "secagg_releases",
    metadata,
    sa.Column("release_id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("items_sha256", sa.String(64), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("committed", sa.Boolean, nullable=False),
)

thresholds = sa.Table(
    "secagg_tasks",
    metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


class ReleaseRefused(Conflict):
    """A release the mask service will not answer; ``code`` says why."""


@dataclass(frozen=True)
class Item:
    update_id: str
    weight: int


def items_digest(items: Sequence[Item]) -> str:
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.update_id):
        digest.update(f"{item.update_id}:{item.weight}|".encode())
    return digest.hexdigest()


def _conflict(update_id: str) -> UpdateRejected:
    return UpdateRejected(f"update {update_id} already has another seed", code="seed_refused")


@dataclass(frozen=True)
class _Seed:
    task_id: str
    update_id: str
    device_id: str
    seed: bytes
    sealed_sha256: str
    future: asyncio.Future[None]

    def row(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "update_id": self.update_id,
            "device_id": self.device_id,
            "seed": self.seed,
            "sealed_sha256": self.sealed_sha256,
            "created_at": time.time(),
            "release_id": None,
        }


class SeedStore:
    def __init__(self, engine: AsyncEngine, *, min_threshold: int) -> None:
        self._engine = engine
        self._min_threshold = min_threshold
        self._queue: list[_Seed] = []
        self._writer: asyncio.Task[None] | None = None
        self._thresholds: dict[str, int] = {}  # fixed once stored: read once

    async def create(self) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot create the mask service's store: {exc}", exc) from exc

    async def threshold(self, task_id: str, asked: int) -> int:
        """The task's threshold: fixed at its first seed, never below the service's own
        minimum, whatever the server asks later."""
        if task_id in self._thresholds:
            return self._thresholds[task_id]
        want = max(asked, self._min_threshold)
        try:
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.select(thresholds.c.threshold).where(thresholds.c.task_id == task_id)
                    )
                ).first()
                if row is not None:
                    self._thresholds[task_id] = int(row[0])
                    return int(row[0])
                await conn.execute(
                    thresholds.insert().values(
                        task_id=task_id, threshold=want, created_at=time.time()
                    )
                )
        except IntegrityError:
            return await self.threshold(task_id, asked)
        except SQLAlchemyError as exc:
            raise storage_error(f"mask service store: {exc}", exc) from exc
        self._thresholds[task_id] = want
        return want

    async def register(
        self, task_id: str, update_id: str, device_id: str, seed: bytes, sealed_sha256: str
    ) -> None:
        """Store a seed durably (UpdateRejected ``seed_refused`` for a conflicting one).

        Group commit: registrations that arrive while a transaction is being written wait
        for the next one, which writes them all (one fsync for the group, not per seed);
        each caller returns once its own seed is durable, or gets its own verdict."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Seed(task_id, update_id, device_id, seed, sealed_sha256, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await future

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                verdicts = await self._write_batch(batch)
            except IntegrityError:  # a twin written by another process: one by one
                verdicts = [await self._write_one(item) for item in batch]
            except SQLAlchemyError as exc:
                failure = StorageError(f"mask service store ({type(exc).__name__})")
                verdicts = [failure] * len(batch)
            for item, verdict in zip(batch, verdicts, strict=True):
                if item.future.done():
                    continue
                if verdict is None:
                    item.future.set_result(None)
                else:
                    item.future.set_exception(verdict)

    async def _write_batch(self, batch: list[_Seed]) -> list[Exception | None]:
        keys = {(i.task_id, i.update_id) for i in batch}
        async with self._engine.begin() as conn:
            rows = await conn.execute(
                sa.select(
                    seeds.c.task_id, seeds.c.update_id, seeds.c.sealed_sha256, seeds.c.device_id
                ).where(sa.tuple_(seeds.c.task_id, seeds.c.update_id).in_(list(keys)))
            )
            held = {(r[0], r[1]): (r[2], r[3]) for r in rows}
            verdicts: list[Exception | None] = []
            fresh = []
            for item in batch:
                key = (item.task_id, item.update_id)
                known = held.get(key)
                if known is None:
                    held[key] = (item.sealed_sha256, item.device_id)
                    fresh.append(item.row())
                    verdicts.append(None)
                elif known == (item.sealed_sha256, item.device_id):
                    verdicts.append(None)  # the same seed again: idempotent
                else:
                    verdicts.append(_conflict(item.update_id))
            if fresh:
                await conn.execute(seeds.insert(), fresh)
        return verdicts

    async def _write_one(self, item: _Seed) -> Exception | None:
        try:
            verdicts = await self._write_batch([item])
        except IntegrityError:
            return UpdateRejected("a concurrent seed for this update", code="seed_refused")
        except SQLAlchemyError as exc:
            return StorageError(f"mask service store ({type(exc).__name__})")
        return verdicts[0]

    async def claim_release(
        self, task_id: str, release_id: str, version: int, items: Sequence[Item]
    ) -> dict[str, bytes]:
        """Check a release and mark its seeds used by it; returns update id -> seed."""
        digest = items_digest(items)
        ids = [i.update_id for i in items]
        if len(set(ids)) != len(ids):
            raise ReleaseRefused("a release names an update twice", code="release_refused")
        try:
            async with self._engine.begin() as conn:
                need = (
                    await conn.execute(
                        sa.select(thresholds.c.threshold).where(thresholds.c.task_id == task_id)
                    )
                ).scalar()
                if need is None:
                    raise ReleaseRefused(
                        "no seeds were registered for this task", code="release_refused"
                    )
                earlier = (
                    await conn.execute(
                        sa.select(releases.c.items_sha256, releases.c.committed).where(
                            releases.c.release_id == release_id
                        )
                    )
                ).first()
                if earlier is not None and earlier[0] != digest:
                    raise ReleaseRefused("another release has this id", code="release_overlap")
                rows = (
                    await conn.execute(
                        sa.select(
                            seeds.c.update_id, seeds.c.device_id, seeds.c.seed, seeds.c.release_id
                        ).where(seeds.c.task_id == task_id, seeds.c.update_id.in_(ids))
                    )
                ).all()
                found = {r[0]: r for r in rows}
                missing = [uid for uid in ids if uid not in found]
                if missing:
                    raise ReleaseRefused(
                        f"no seed for {len(missing)} update(s), e.g. {missing[0]}",
                        code="release_unknown_update",
                    )
                used = [uid for uid, r in found.items() if r[3] not in (None, release_id)]
                if used:
                    raise ReleaseRefused(
                        f"{len(used)} update(s) were part of an earlier, different release",
                        code="release_overlap",
                    )
                devices = {r[1] for r in rows}
                if len(ids) < need or len(devices) < need:
                    raise ReleaseRefused(
                        f"a release needs {need} updates from distinct devices; this one has "
                        f"{len(ids)} from {len(devices)}",
                        code="release_below_threshold",
                    )
                if earlier is None:
                    await conn.execute(
                        releases.insert().values(
                            release_id=release_id,
                            task_id=task_id,
                            version=version,
                            items_sha256=digest,
                            count=len(ids),
                            created_at=time.time(),
                            committed=False,
                        )
                    )
                    await conn.execute(
                        seeds.update()
                        .where(seeds.c.task_id == task_id, seeds.c.update_id.in_(ids))
                        .values(release_id=release_id)
                    )
        except (ReleaseRefused, UpdateRejected):
            raise
        except SQLAlchemyError as exc:
            raise storage_error(f"mask service store: {exc}", exc) from exc
        return {r[0]: bytes(r[2]) for r in rows}

    async def forget(self, task_id: str, release_id: str) -> int:
        """The release's version is committed: delete its seeds; returns how many."""
        try:
            async with self._engine.begin() as conn:
                deleted = await conn.execute(
                    seeds.delete().where(
                        seeds.c.task_id == task_id, seeds.c.release_id == release_id
                    )
                )
                await conn.execute(
                    releases.update()
                    .where(releases.c.release_id == release_id)
                    .values(committed=True)
                )
        except SQLAlchemyError as exc:
            raise storage_error(f"mask service store: {exc}", exc) from exc
        return int(deleted.rowcount or 0)

    async def seed_count(self, task_id: str) -> int:
        try:
            async with self._engine.connect() as conn:
                value = (
                    await conn.execute(
                        sa.select(sa.func.count())
                        .select_from(seeds)
                        .where(seeds.c.task_id == task_id)
                    )
                ).scalar()
        except SQLAlchemyError as exc:
            raise storage_error(f"mask service store: {exc}", exc) from exc
        return int(value or 0)
