"""Sessions in Redis: admission under C across every API replica, single-use uploads.

A task's active sessions are a sorted set (session id -> deadline); admission is one
Lua script (drop the expired, compare the count with C, add), so replicas never admit
more than C between them. An upload's state lives in a small hash created at the first
upload and kept for an hour after the deadline to answer retries. Same contract as
:class:`~server.coordination.sessions.InProcessSessionStore`.

A granted upload claim records a random ``owner`` token and when it was claimed: the
replica must present the token when it ships the partial holding the update
(:mod:`server.coordination.partials`), so an upload a crashed or stalled replica held
can be taken over after ``TAKEOVER_S`` without ever being stored twice. Revoked devices
are a set that admission and claims consult inside the same scripts.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors
from server.coordination.sessions import Claim, DeviceRevoked, Verdict, session_ttl_ms
from server.coordination.tokens import SessionClaims

# An upload claimed this long ago and never finished belonged to a replica that died or
# stalled: another request may take it over (the stale owner's token no longer ships).
TAKEOVER_S = 30.0

ADMIT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return 1
"""

CLAIM = """
if redis.call('SISMEMBER', KEYS[3], ARGV[6]) == 1 then return {'revoked', '', '', 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'uploading', 'owner', ARGV[4], 'claimed_at', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'granted', '', '', 0} end
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return {'granted', '', '', 1}
end
if state == 'uploading' then
  local since = tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0')
  if tonumber(ARGV[5]) - since < tonumber(ARGV[7]) then return {'in_progress', '', '', 0} end
  state = 'active'
end
if state == 'active' then
  redis.call('HSET', KEYS[1], 'state', 'uploading', 'owner', ARGV[4], 'claimed_at', ARGV[5])
  return {'granted', '', '', 0}
end
local ack = redis.call('HGET', KEYS[1], 'ack') or ''
return {state, ack, redis.call('HGET', KEYS[1], 'reason') or '', 0}
"""

FINISH = """
redis.call('HSET', KEYS[1], 'state', ARGV[2], ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'uploading'
   and (ARGV[1] == '' or redis.call('HGET', KEYS[1], 'owner') == ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'active')
  redis.call('HDEL', KEYS[1], 'owner')
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
                keys=[self._keys.active_sessions(claims.task), self._keys.revoked()],
                args=[repr(now), capacity, claims.sid, repr(claims.expires_at), claims.device],
            )
        if admitted == -1:
            raise DeviceRevoked("device is revoked")
        return bool(admitted)

    async def active_count(self, task_id: str, now: float) -> int:
        with redis_errors("session count"):
            return int(await self._redis.zcount(self._keys.active_sessions(task_id), now, "+inf"))

    async def claim_upload(self, claims: SessionClaims, now: float) -> Claim:
        token = secrets.token_hex(8)
        with redis_errors("upload claim"):
            verdict, ack, reason, recreated = await self._claim(
                keys=[
                    self._keys.session(claims.task, claims.sid),
                    self._keys.active_sessions(claims.task),
                    self._keys.revoked(),
                ],
                args=[
                    claims.sid,
                    repr(claims.expires_at),
                    session_ttl_ms(claims),
                    token,
                    repr(now),
                    claims.device,
                    TAKEOVER_S,
                ],
            )
        name = verdict.decode()
        if name == "revoked":
            raise DeviceRevoked("device is revoked")
        granted = name == Verdict.GRANTED
        return Claim(
            Verdict(name),
            ack=json.loads(ack) if ack else None,
            reason=reason.decode() or None,
            recreated=bool(recreated),
            token=token if granted else "",
        )

    async def _finish(self, claims: SessionClaims, state: str, field: str, value: str) -> None:
        with redis_errors("upload outcome"):
            await self._finish_script(
                keys=[
                    self._keys.session(claims.task, claims.sid),
                    self._keys.active_sessions(claims.task),
                ],
                args=[claims.sid, state, field, value, session_ttl_ms(claims)],
            )

    async def complete_upload(self, claims: SessionClaims, ack: dict[str, Any]) -> None:
        await self._finish(claims, "accepted", "ack", json.dumps(ack))

    async def reject_upload(self, claims: SessionClaims, reason: str) -> None:
        await self._finish(claims, "rejected", "reason", reason)

    async def release_upload(self, claims: SessionClaims, token: str = "") -> None:
        with redis_errors("upload release"):
            await self._release(keys=[self._keys.session(claims.task, claims.sid)], args=[token])

    async def forget_task(self, task_id: str) -> None:
        with redis_errors("forget task"):
            await self._redis.delete(self._keys.active_sessions(task_id))

    async def revoke_device(self, device_id: str) -> None:
        with redis_errors("revocation"):
            await self._redis.sadd(self._keys.revoked(), device_id)

    async def load_revoked(self, device_ids: Iterable[str]) -> None:
        ids = list(device_ids)
        if ids:
            with redis_errors("revocation"):
                await self._redis.sadd(self._keys.revoked(), *ids)

    async def is_revoked(self, device_id: str) -> bool:
        with redis_errors("revocation"):
            return bool(await self._redis.sismember(self._keys.revoked(), device_id))
