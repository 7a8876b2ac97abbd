"""Database engine, migrations and the start-up schema check.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is chosen by URL.
Alembic runs on a connection we open, so the same code serves ``asyncfl db upgrade``,
the start-up check and the tests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.errors import ConfigError, DatabaseBusy, StorageError

logger = logging.getLogger(__name__)


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL mode and a busy timeout for concurrent readers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


# What a database says when it is overloaded rather than broken (SQLite's lock timeout,
# PostgreSQL's connection limit): the request may succeed a moment later.
_BUSY_TEXT = ("database is locked", "too many clients", "too many connections")


def storage_error(message: str, exc: BaseException) -> StorageError:
    """The error to raise for a failed database call: :class:`DatabaseBusy` (503, retry)
    when the pool had no connection in time or the database was overloaded, else
    :class:`StorageError` (500)."""
    busy = isinstance(exc, PoolTimeout) or (
        isinstance(exc, DBAPIError) and any(t in str(exc.orig).lower() for t in _BUSY_TEXT)
    )
    return DatabaseBusy(message) if busy else StorageError(message)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(migrations_dir: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    return cfg


def head_revision(migrations_dir: Path) -> str | None:
    return ScriptDirectory.from_config(alembic_config(migrations_dir)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot read the schema revision: {exc}") from exc


async def upgrade(engine: AsyncEngine, migrations_dir: Path, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``."""
    cfg = alembic_config(migrations_dir)

    def run(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"migration failed: {exc}") from exc
    logger.info("database schema at %s", revision)


async def ensure_schema(engine: AsyncEngine, migrations_dir: Path, *, auto_migrate: bool) -> None:
    """Refuse to run on a schema that is not at head (or migrate it when allowed)."""
    head = head_revision(migrations_dir)
    current = await current_revision(engine)
    if current == head:
        return
    if auto_migrate:
        logger.info("migrating database schema from %s to %s", current, head)
        await upgrade(engine, migrations_dir)
        return
    raise ConfigError(
        f"database schema is at {current or 'nothing'}, this server needs {head}: "
        "run `asyncfl db upgrade` first"
    )


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        return False
    return True
