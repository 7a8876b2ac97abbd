"""The distributed update queue: one Redis Stream per task.

An API replica acknowledges an upload once ``XADD`` returned: the update is then as
durable as Redis is configured to make it (see the README's durability table: with
``appendonly yes`` and ``appendfsync always`` an acknowledged update survives a Redis
crash; with ``everysec`` up to a second of them may not). Stream ids are the queue
positions; the task's leader reads in id order from the position its last committed
version recorded, and trims the stream only after a commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from client_sdk.wire import pack, unpack
from server.coordination.keys import Keys
from server.coordination.queue import START, QueuedUpdate
from server.coordination.redisconn import redis_errors

logger = logging.getLogger(__name__)

READ_COUNT = 256
BLOCK_MS = 1000
RETRY_MIN_S = 0.2
RETRY_MAX_S = 2.0


def position_key(position: str) -> tuple[int, ...]:
    """Stream ids compare as (milliseconds, sequence); ``"0"`` is the start."""
    ms, _, seq = position.partition("-")
    return (int(ms), int(seq or 0))


def _after(position: str) -> str:
    """The smallest id greater than ``position`` (XTRIM MINID keeps ids >= it)."""
    ms, seq = position_key(position)
    return f"{ms}-{seq + 1}"


class RedisStreamQueue:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def append(self, update: QueuedUpdate) -> str:
        fields: dict[Any, Any] = {b"m": pack(update.meta()), b"b": bytes(update.body)}
        with redis_errors("update queue"):
            stream_id = await self._redis.xadd(self._keys.updates(update.task_id), fields)
        return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)

    async def consume(self, task_id: str, after: str) -> AsyncIterator[QueuedUpdate]:
        stream = self._keys.updates(task_id)
        cursor = "0-0" if after == START else after
        backoff = RETRY_MIN_S
        while True:
            try:
                answer: Any = await self._redis.xread(
                    {stream: cursor}, count=READ_COUNT, block=BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                # Redis down or restarting: keep the position and wait for it; the lease
                # decides meanwhile whether this process still leads the task.
                logger.warning("update stream %s unreadable (%s); retrying", stream, exc)
                await asyncio.sleep(backoff)
                backoff = min(RETRY_MAX_S, backoff * 2)
                continue
            backoff = RETRY_MIN_S
            for _name, entries in answer or []:
                for raw_id, fields in entries:
                    cursor = raw_id.decode()
                    yield QueuedUpdate.from_meta(unpack(fields[b"m"]), fields[b"b"], cursor)

    async def trim(self, task_id: str, upto: str) -> None:
        with redis_errors("update queue trim"):
            await self._redis.xtrim(
                self._keys.updates(task_id), minid=_after(upto), approximate=False
            )

    async def last_position(self, task_id: str) -> str:
        with redis_errors("update queue"):
            newest: Any = await self._redis.xrevrange(self._keys.updates(task_id), count=1)
        return str(newest[0][0].decode()) if newest else START

    def position_key(self, position: str) -> tuple[int, ...]:
        return position_key(position)

    async def appended_count(self, task_id: str) -> int:
        with redis_errors("update queue"):
            try:
                info: Any = await self._redis.xinfo_stream(self._keys.updates(task_id))
            except ResponseError as exc:  # no such key: nothing appended yet
                if "no such key" in str(exc).lower():
                    return 0
                raise
        return int(info.get("entries-added", info.get(b"entries-added", 0)))

    async def pending(self, task_id: str, after: str) -> int:
        """How many updates sit in the stream after ``after`` (not yet in a version)."""
        with redis_errors("update queue"):
            entries: Any = await self._redis.xrange(
                self._keys.updates(task_id), min=_after(after) if after != START else "-", max="+"
            )
        return len(entries)

    async def close(self) -> None:
        return None
