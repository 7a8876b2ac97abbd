"""Who aggregates which task: leases, renewal, failover and a fair share of tasks.

Every aggregating process runs :class:`Leadership`. Each tick it renews the leases of
the tasks it leads (a task whose lease cannot be renewed, or whose committer was refused
by the database fence, is dropped at once) and tries to take free leases while it leads
fewer than its fair share (tasks / live aggregators, rounded up). A crashed leader's
lease expires after its TTL and the next tick of another process takes the task: a
failover takes at most the TTL plus one tick.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.leases import Leases
from server.coordination.redisconn import redis_errors
from server.errors import AsyncflError
from server.tasks.commits import LeadershipLost
from server.tasks.manager import TaskManager

logger = logging.getLogger(__name__)


class AggregatorRegistry:
    """Live aggregators, for the fair share: heartbeats in a Redis sorted set."""

    def __init__(self, redis: Redis, keys: Keys, owner: str, ttl_s: float) -> None:
        self._redis = redis
        self._key = keys.aggregators()
        self._owner = owner
        self._ttl_s = ttl_s

    async def heartbeat(self) -> int:
        """Announce this aggregator; return how many are alive (itself included)."""
        now = time.time()
        with redis_errors("aggregator registry"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(self._key, {self._owner: now + self._ttl_s})
            pipe.zremrangebyscore(self._key, "-inf", now)
            pipe.zcard(self._key)
            results = await pipe.execute()
        return max(1, int(results[-1]))

    async def leave(self) -> None:
        with redis_errors("aggregator registry"):
            await self._redis.zrem(self._key, self._owner)


class Leadership:
    def __init__(
        self,
        manager: TaskManager,
        leases: Leases,
        *,
        registry: AggregatorRegistry | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self._manager = manager
        self._leases = leases
        self._registry = registry
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except AsyncflError as exc:
                logger.warning("leadership tick failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        live = await self._registry.heartbeat() if self._registry is not None else 1
        task_ids = sorted(self._manager.runtimes)
        share = math.ceil(len(task_ids) / live) if task_ids else 0
        for task_id in task_ids:
            runtime = self._manager.runtimes[task_id]
            if runtime.leading:
                await self._keep(task_id)
            elif sum(r.leading for r in self._manager.runtimes.values()) < share:
                await self.try_lead(task_id)

    async def try_lead(self, task_id: str) -> bool:
        if await self._leases.acquire(task_id) is None:
            return False
        try:
            await self._manager.start_aggregating(task_id)
        except AsyncflError as exc:
            logger.error("cannot lead task %s: %s", task_id, exc)
            await self._leases.release(task_id)
            return False
        return True

    async def _keep(self, task_id: str) -> None:
        failure = self._manager.runtimes[task_id].failure()
        if isinstance(failure, LeadershipLost):
            logger.warning("task %s: a newer leader holds the fence; stepping down", task_id)
        elif failure is not None:
            logger.error("task %s: aggregation stopped: %s", task_id, failure)
        if failure is not None or not await self._leases.renew(task_id):
            await self._manager.stop_aggregating(task_id)
            await self._leases.release(task_id)

    async def step_down(self) -> None:
        for task_id, runtime in list(self._manager.runtimes.items()):
            if runtime.leading:
                await self._manager.stop_aggregating(task_id)
                await self._leases.release(task_id)
        if self._registry is not None:
            await self._registry.leave()
