"""Telling every replica what changed: a task was created, paused or resumed, a version
was committed. Pub/sub is fire-and-forget, so replicas also poll the database now and
then (:mod:`server.tasks.sync_state`); an event only makes them notice sooner.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors

logger = logging.getLogger(__name__)


class EventBus(Protocol):
    async def publish(self, event: dict[str, Any]) -> None: ...

    def subscribe(self) -> AsyncIterator[dict[str, Any]]: ...


class LocalEvents:
    """One process: events go to this process's subscribers only."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[dict[str, Any]]] = []

    async def publish(self, event: dict[str, Any]) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)


class RedisEvents:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._channel = keys.events()

    async def publish(self, event: dict[str, Any]) -> None:
        with redis_errors("events"):
            await self._redis.publish(self._channel, json.dumps(event))

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        """Events from every replica; reconnects (and skips what was missed) on errors."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield json.loads(message["data"])
            except (RedisError, OSError) as exc:
                logger.warning("event subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
