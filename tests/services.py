"""Real backing services for tests: PostgreSQL and Redis on loopback.

Under CI (``CI=true``) a missing service fails the test: CI must prove the real
integrations. Elsewhere such tests skip with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import connect

POSTGRES_ADMIN_URL = os.environ.get(
    "ASYNCFL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ASYNCFL_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests need the real service)")
    pytest.skip(message)


def require_postgres() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)


def require_redis() -> None:
    require_service("Redis", "127.0.0.1", 6379)


async def _admin_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_postgres_database() -> str:
    """A fresh, empty database; returns its SQLAlchemy asyncpg URL."""
    require_postgres()
    name = f"asyncfl_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_exec(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def redis_namespace() -> AsyncIterator[tuple[Redis, Keys]]:
    """A client on the real Redis and a fresh key namespace, deleted afterwards."""
    require_redis()
    client = connect(REDIS_URL)
    keys = Keys(f"afltest-{uuid.uuid4().hex[:10]}")
    try:
        yield client, keys
    finally:
        batch = [k async for k in client.scan_iter(match=keys.pattern(), count=1000)]
        if batch:
            await client.delete(*batch)
        await client.aclose()
