"""Enrolled devices."""

from __future__ import annotations

from dataclasses import asdict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.errors import Conflict
from server.storage.database import storage_error
from server.storage.records import DeviceRecord
from server.storage.schema import devices


class DeviceRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, device: DeviceRecord) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(devices.insert().values(**asdict(device)))
        except IntegrityError as exc:
            raise Conflict(f"device {device.id!r} exists", code="device_exists") from exc
        except SQLAlchemyError as exc:
            raise storage_error(f"cannot enroll device: {exc}", exc) from exc

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
