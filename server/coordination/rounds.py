"""Sync rounds across API replicas: the leader's open round, shared in Redis.

The task's leader owns the round (its :class:`~server.aggregation.SyncRoundAggregator`
opens, steps and closes rounds) and publishes it here whenever it changes. Replicas
select devices into it at check-in (:meth:`RedisRounds.select`: at most
``cohort`` devices, one session per device per round) and reserve one of its ``goal``
upload slots before they fold an update into a partial (:meth:`RedisRounds.reserve`),
so that a round takes exactly the first ``goal`` updates, as on the embedded server;
the rest are refused ``round_closed`` before they are acknowledged. A reservation whose
upload is then refused is given back (:meth:`RedisRounds.unreserve`).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors

# KEYS: round hash, the round's member set. ARGV: now, device, ttl ms, the replica's version.
SELECT = """
local r = redis.call('HMGET', KEYS[1], 'id', 'version', 'deadline', 'open', 'cohort', 'selected')
if r[1] == false or r[4] ~= '1' or tonumber(ARGV[1]) > tonumber(r[3]) then return {0} end
if tonumber(r[2]) > tonumber(ARGV[4]) then return {0} end
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {0} end
if tonumber(r[6]) >= tonumber(r[5]) then return {0} end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'selected', 1)
return {1, r[1], r[2], r[3]}
"""

# KEYS: round hash. ARGV: round id, +1 (reserve) or -1 (give back).
RESERVE = """
local r = redis.call('HMGET', KEYS[1], 'id', 'open', 'goal', 'received')
if r[1] ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  if r[2] ~= '1' or tonumber(r[4]) >= tonumber(r[3]) then return 0 end
  redis.call('HINCRBY', KEYS[1], 'received', 1)
  return 1
end
if tonumber(r[4]) > 0 then redis.call('HINCRBY', KEYS[1], 'received', -1) end
return 1
"""

# KEYS: round hash. ARGV: id, version, deadline, open, cohort, goal.
PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'id') or '-1')
local id = tonumber(ARGV[1])
if id < current then return 0 end
if id > current then
  redis.call('HSET', KEYS[1], 'selected', 0, 'received', 0)
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'version', ARGV[2], 'deadline', ARGV[3],
  'open', ARGV[4], 'cohort', ARGV[5], 'goal', ARGV[6])
return 1
"""


@dataclass(frozen=True)
class SharedRound:
    round_id: int
    version: int
    deadline: float


class RedisRounds:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._select = redis.register_script(SELECT)
        self._reserve = redis.register_script(RESERVE)
        self._publish = redis.register_script(PUBLISH)

    async def select(
        self, task_id: str, device_id: str, now: float, known_version: int
    ) -> SharedRound | None:
        """Admit a device into the open round; None when full, closed, already in it, or
        on a version this replica has not seen committed yet."""
        key = self._keys.round(task_id)
        with redis_errors("sync round"):
            current = await self._redis.hget(key, "id")
            if current is None:
                return None
            members = self._keys.round_members(task_id, int(current))
            answer = await self._select(
                keys=[key, members], args=[repr(now), device_id, 86_400_000, known_version]
            )
        if not answer or int(answer[0]) != 1:
            return None
        return SharedRound(int(answer[1]), int(answer[2]), float(answer[3]))

    async def reserve(self, task_id: str, round_id: int) -> bool:
        """Take one of the round's ``goal`` upload slots; False when none is left."""
        with redis_errors("sync round"):
            return bool(await self._reserve(keys=[self._keys.round(task_id)], args=[round_id, 1]))

    async def unreserve(self, task_id: str, round_id: int) -> None:
        with redis_errors("sync round"):
            await self._reserve(keys=[self._keys.round(task_id)], args=[round_id, -1])

    async def publish(
        self,
        task_id: str,
        round_id: int,
        version: int,
        deadline: float,
        *,
        is_open: bool,
        cohort: int,
        goal: int,
    ) -> None:
        """The leader's round as it stands (an older round id never overwrites a newer)."""
        with redis_errors("sync round"):
            await self._publish(
                keys=[self._keys.round(task_id)],
                args=[round_id, version, repr(deadline), int(is_open), cohort, goal],
            )

    async def latest_id(self, task_id: str) -> int:
        with redis_errors("sync round"):
            value = await self._redis.hget(self._keys.round(task_id), "id")
        return int(value) if value is not None else 0
