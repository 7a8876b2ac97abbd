"""Enrolled devices.

Enrollments are group-committed: the ones that arrive while a transaction is in flight
go together into the next (one transaction and one fsync for a burst of enrollments,
not one per device; no added wait when they come one at a time)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Conflict, Unavailable
from server.storage.database import storage_error
from server.storage.records import DeviceRecord
from server.storage.schema import devices

logger = logging.getLogger(__name__)

GROUP_MAX = 500  # enrollments in one transaction at most


class DeviceRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: list[tuple[DeviceRecord, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def create(self, device: DeviceRecord) -> None:
        """Enroll ``device``; returns once its row is committed (with the others of its
        group). Conflict when the id exists, StorageError when the database fails."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((device, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="enrollments")
        await done

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
            try:
                await self._insert([d for d, _ in group])
            except IntegrityError:  # an id exists: commit the others, refuse that one
                for device, done in group:
                    _settle(done, await self._insert_one(device))
            except SQLAlchemyError as exc:
                error = storage_error(f"cannot enroll devices: {exc}", exc)
                for _, done in group:
                    _settle(done, error)
            except BaseException as exc:  # cancelled at shutdown: nobody waits forever
                for _, done in group + self._waiting:
                    _settle(done, Unavailable("enrollment interrupted", code="unavailable"))
                self._waiting = []
                if isinstance(exc, Exception):
                    logger.exception("enrollment group failed")
                    continue
                raise
            else:
                for _, done in group:
                    _settle(done, None)

    async def _insert_one(self, device: DeviceRecord) -> Exception | None:
        try:
            await self._insert([device])
        except IntegrityError:
            return Conflict(f"device {device.id!r} exists", code="device_exists")
        except SQLAlchemyError as exc:
            return storage_error(f"cannot enroll device: {exc}", exc)
        return None

    async def _insert(self, group: list[DeviceRecord]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(devices.insert(), [asdict(d) for d in group])

    async def revoke(self, device_id: str) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    devices.update().where(devices.c.id == device_id).values(revoked=True)
                )
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot revoke device: {exc}", exc) from exc

    async def revoked_ids(self) -> set[str]:
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(sa.select(devices.c.id).where(devices.c.revoked))
                return {str(r[0]) for r in rows}
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot read devices: {exc}", exc) from exc

    async def count(self) -> int:
        try:
            async with self._engine.connect() as conn:
                return int(
                    (
                        await conn.execute(sa.select(sa.func.count()).select_from(devices))
                    ).scalar_one()
                )
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot read devices: {exc}", exc) from exc


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # its waiter went away (the request was cancelled)
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
