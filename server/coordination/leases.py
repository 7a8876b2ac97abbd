"""Leadership of a task: a lease with a fencing token.

One aggregator leads a task at a time. Taking the lease yields a fencing token larger
than any before it; the leader writes it into the task row before it loads the task, and
every version commit carries it, so a leader that lost its lease (paused past its TTL,
partitioned) has its commits refused by the database even if it does not know yet.

:class:`InProcessLeases` serves the embedded server (one process leads everything);
:class:`RedisLeases` the distributed mode. Both pass the same contract tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors


class Leases(Protocol):
    async def acquire(self, task_id: str) -> int | None:
        """Take the task's lease if free: the new fencing token, else None."""
        ...

    async def renew(self, task_id: str) -> bool:
        """Extend our lease; False when it is no longer ours."""
        ...

    async def release(self, task_id: str) -> None: ...

    async def holder(self, task_id: str) -> str | None: ...


class InProcessLeases:
    def __init__(
        self, owner: str, ttl_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.owner = owner
        self.ttl_s = ttl_s
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}
        self._fences: dict[str, int] = {}

    def _current(self, task_id: str) -> str | None:
        lease = self._leases.get(task_id)
        if lease is None or lease[1] <= self._clock():
            return None
        return lease[0]

    async def acquire(self, task_id: str) -> int | None:
        if self._current(task_id) is not None:
            return None
        self._leases[task_id] = (self.owner, self._clock() + self.ttl_s)
        self._fences[task_id] = self._fences.get(task_id, 0) + 1
        return self._fences[task_id]

    async def renew(self, task_id: str) -> bool:
        if self._current(task_id) != self.owner:
            return False
        self._leases[task_id] = (self.owner, self._clock() + self.ttl_s)
        return True

    async def release(self, task_id: str) -> None:
        if self._current(task_id) == self.owner:
            del self._leases[task_id]

    async def holder(self, task_id: str) -> str | None:
        return self._current(task_id)


RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    def __init__(self, redis: Redis, keys: Keys, owner: str, ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.owner = owner
        self.ttl_s = ttl_s
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def acquire(self, task_id: str) -> int | None:
        with redis_errors("lease"):
            taken = await self._redis.set(
                self._keys.leader(task_id), self.owner, nx=True, px=int(self.ttl_s * 1000)
            )
            if not taken:
                return None
            return int(await self._redis.incr(self._keys.fence(task_id)))

    async def renew(self, task_id: str) -> bool:
        with redis_errors("lease"):
            renewed = await self._renew(
                keys=[self._keys.leader(task_id)], args=[self.owner, int(self.ttl_s * 1000)]
            )
        return bool(renewed)

    async def release(self, task_id: str) -> None:
        with redis_errors("lease"):
            await self._release(keys=[self._keys.leader(task_id)], args=[self.owner])

    async def holder(self, task_id: str) -> str | None:
        with redis_errors("lease"):
            value: Any = await self._redis.get(self._keys.leader(task_id))
        return value.decode() if value else None
