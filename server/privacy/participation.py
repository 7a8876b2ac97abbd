"""The participation limit the accountant relies on: a device checks in to a DP task at
most once every ``min_separation`` versions. One small interface, an in-process and a
Redis implementation (distributed replicas share the Redis one)."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors

__all__ = ["InProcessParticipation", "Participation", "RedisParticipation"]


class Participation(Protocol):
    async def allowed(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        """Would :meth:`admit` admit? (a check before a session slot is taken)"""
        ...

    async def admit(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        """Record a check-in at ``version`` and return True, unless the device checked
        in at a version less than ``separation`` before (then False, nothing changes)."""
        ...


class InProcessParticipation:
    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    async def allowed(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        last = self._last.get((task_id, device_id))
        return last is None or version >= last + separation

    async def admit(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        last = self._last.get((task_id, device_id))
        if last is not None and version < last + separation:
            return False
        self._last[(task_id, device_id)] = version
        return True


# KEYS[1] the device's last check-in version; ARGV: version, separation
ADMIT = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(ARGV[1]) < tonumber(last) + tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class RedisParticipation:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._redis = redis
        self._admit = redis.register_script(ADMIT)

    async def allowed(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        with redis_errors("participation limit"):
            last = await self._redis.get(self._keys.participation(task_id, device_id))
        return last is None or version >= int(last) + separation

    async def admit(self, task_id: str, device_id: str, version: int, separation: int) -> bool:
        key = self._keys.participation(task_id, device_id)
        with redis_errors("participation limit"):
            return bool(await self._admit(keys=[key], args=[version, separation]))
