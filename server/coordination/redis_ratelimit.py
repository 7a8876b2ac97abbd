"""Per-device rate limits in Redis (GCRA: one key per device, one script call)."""

from __future__ import annotations

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors

# GCRA on Redis' own clock (TIME), so every replica agrees. Returns ms to wait (0: go).
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local wait = new_tat - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, keys: Keys, rate_per_s: float, burst: int) -> None:
        self._keys = keys
        self._script = redis.register_script(GCRA)
        self._emission_ms = 1000.0 / rate_per_s
        self._burst_ms = self._emission_ms * burst

    async def acquire(self, key: str) -> float:
        with redis_errors("rate limit"):
            wait_ms = await self._script(
                keys=[self._keys.rate(key)], args=[self._emission_ms, self._burst_ms]
            )
        return float(wait_ms) / 1000.0
