"""Sessions in Redis: admission under C across every API replica, single-use uploads.

A task's active sessions are a sorted set (session id -> deadline); admission is one
Lua script (drop the expired, compare the count with C, add), so replicas never admit
more than C between them. An upload's state lives in a small hash created at the first
upload and kept for an hour after the deadline to answer retries. Same contract as
:class:`~server.coordination.sessions.InProcessSessionStore`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors
from server.coordination.sessions import FINISHED_RETENTION_S, Claim, Verdict
from server.coordination.tokens import SessionClaims

ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return 1
"""

CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'uploading')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'granted', '', '', 0} end
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return {'granted', '', '', 1}
end
if state == 'active' then
  redis.call('HSET', KEYS[1], 'state', 'uploading')
  return {'granted', '', '', 0}
end
if state == 'uploading' then return {'in_progress', '', '', 0} end
local ack = redis.call('HGET', KEYS[1], 'ack') or ''
return {state, ack, redis.call('HGET', KEYS[1], 'reason') or '', 0}
"""

FINISH = """
redis.call('HSET', KEYS[1], 'state', ARGV[2], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'uploading' then
  redis.call('HSET', KEYS[1], 'state', 'active')
  return 1
end
return 0
"""


class RedisSessionStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._admit = redis.register_script(ADMIT)
        self._claim = redis.register_script(CLAIM)
        self._finish_script = redis.register_script(FINISH)
        self._release = redis.register_script(RELEASE)

    async def admit(self, claims: SessionClaims, capacity: int, now: float) -> bool:
        with redis_errors("session admission"):
            admitted = await self._admit(
                keys=[self._keys.active_sessions(claims.task)],
                args=[repr(now), capacity, claims.sid, repr(claims.expires_at)],
            )
        return bool(admitted)

    async def active_count(self, task_id: str, now: float) -> int:
        with redis_errors("session count"):
            return int(await self._redis.zcount(self._keys.active_sessions(task_id), now, "+inf"))

    async def claim_upload(self, claims: SessionClaims, now: float) -> Claim:
        with redis_errors("upload claim"):
            verdict, ack, reason, recreated = await self._claim(
                keys=[
                    self._keys.session(claims.task, claims.sid),
                    self._keys.active_sessions(claims.task),
                ],
                args=[claims.sid, repr(claims.expires_at), _ttl_ms(claims)],
            )
        return Claim(
            Verdict(verdict.decode()),
            ack=json.loads(ack) if ack else None,
            reason=reason.decode() or None,
            recreated=bool(recreated),
        )

    async def _finish(self, claims: SessionClaims, state: str, field: str, value: str) -> None:
        with redis_errors("upload outcome"):
            await self._finish_script(
                keys=[
                    self._keys.session(claims.task, claims.sid),
                    self._keys.active_sessions(claims.task),
                ],
                args=[claims.sid, state, field, value, _ttl_ms(claims)],
            )

    async def complete_upload(self, claims: SessionClaims, ack: dict[str, Any]) -> None:
        await self._finish(claims, "accepted", "ack", json.dumps(ack))

    async def reject_upload(self, claims: SessionClaims, reason: str) -> None:
        await self._finish(claims, "rejected", "reason", reason)

    async def release_upload(self, claims: SessionClaims) -> None:
        with redis_errors("upload release"):
            await self._release(keys=[self._keys.session(claims.task, claims.sid)], args=[])

    async def forget_task(self, task_id: str) -> None:
        with redis_errors("forget task"):
            await self._redis.delete(self._keys.active_sessions(task_id))


def _ttl_ms(claims: SessionClaims) -> int:
    """Keep an upload's state until an hour after the session's deadline."""
    return max(1000, int((claims.expires_at - time.time() + FINISHED_RETENTION_S) * 1000))
