"""The distributed update queue: a Redis Stream per task of replicas' partial sums.

An API replica folds the updates it accepts into a partial (one float32 sum per base
version, :mod:`server.aggregation.partial`) and ships it once per group interval with
:meth:`RedisPartialQueue.ship`: one Lua script that checks that this replica still owns
every session in the partial (each was claimed for upload with a token, see
:mod:`server.coordination.redis_sessions`), appends the partial to the task's stream,
marks each session accepted with its acknowledgement and counts the updates, all
atomically. So a partial is in the stream exactly when its sessions are accepted: a
replica that dies before the script ran has acknowledged nothing in it (the devices
retry and another replica takes the sessions over), one that dies after has lost
nothing. The task's leader reads the stream in order from the position its last
committed version recorded and trims it after each commit.

A stream entry has two fields: ``m`` (msgpack meta: the partial's id, the replica, its
groups with their base version, round, weight sum and ids, and one ledger entry per
update) and ``b`` (the groups' float32 sums, concatenated). Redis bytes per accepted
update are about the model's size divided by the number of updates in a group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from client_sdk.errors import WireFormatError
from client_sdk.wire import pack, unpack
from server.aggregation import Partial, PartialGroup
from server.coordination.keys import Keys
from server.coordination.redisconn import redis_errors
from server.coordination.sessions import session_ttl_ms
from server.coordination.tokens import SessionClaims
from server.errors import Conflict

logger = logging.getLogger(__name__)

# Group sums: float32, or uint32 for masked updates (secure aggregation); 4 bytes each.
GROUP_DTYPES = {"float32": np.float32, "uint32": np.uint32}

# The position before the first entry of a stream.
START = "0"
READ_COUNT = 64
BLOCK_MS = 1000
RETRY_MIN_S = 0.2
RETRY_MAX_S = 2.0

# KEYS: stream, accepted counter, active sessions, then one session hash per update.
# ARGV: meta, body, update count, ttl ms, then (token, ack) per update, then the sids.
SHIP = """
local n = tonumber(ARGV[3])
for i = 1, n do
  local key = KEYS[3 + i]
  if redis.call('HGET', key, 'state') ~= 'uploading'
     or redis.call('HGET', key, 'owner') ~= ARGV[4 + 2 * i - 1] then
    return {0, i}
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[1], 'b', ARGV[2])
redis.call('INCRBY', KEYS[2], n)
for i = 1, n do
  local key = KEYS[3 + i]
  redis.call('HSET', key, 'state', 'accepted', 'ack', ARGV[4 + 2 * i])
  redis.call('HDEL', key, 'owner')
  redis.call('PEXPIRE', key, ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4 + 2 * n + i])
end
return {1, id}
"""


def position_key(position: str) -> tuple[int, ...]:
    """Stream ids compare as (milliseconds, sequence); ``"0"`` is the start."""
    ms, _, seq = position.partition("-")
    return (int(ms), int(seq or 0))


def redis_after(position: str) -> str:
    """The smallest id greater than ``position`` (XTRIM MINID keeps ids >= it)."""
    ms, seq = position_key(position)
    return f"{ms}-{seq + 1}"


class SessionsLost(Conflict):
    """A partial named a session this replica no longer owns (another replica took it
    over after this one stalled): nothing in the partial was stored."""

    code = "upload_in_progress"


@dataclass(frozen=True)
class ShippedUpdate:
    """One update of a partial: its session, the claim token, its ack and ledger fields."""

    claims: SessionClaims
    token: str
    ack: dict[str, Any]
    entry: dict[str, Any]


@dataclass(frozen=True)
class PartialRecord:
    """A partial as the leader reads it back from the stream."""

    partial_id: str
    replica: str
    created_at: float
    partial: Partial
    entries: list[dict[str, Any]]
    position: str = ""


def encode(
    partial_id: str, replica: str, created_at: float, partial: Partial, entries: Sequence[Any]
) -> tuple[bytes, bytes]:
    meta = {
        "id": partial_id,
        "replica": replica,
        "at": created_at,
        "groups": [
            {
                "base": g.base_version,
                "round": g.round_id,
                "weight_sum": g.weight_sum,
                "ids": list(g.ids),
                "weights": list(g.example_weights),
                "size": int(g.total.size),
                "dtype": g.total.dtype.name,
            }
            for g in partial.groups
        ],
        "entries": list(entries),
    }
    body = b"".join(g.total.tobytes() for g in partial.groups)
    return pack(meta), body


class PoisonRecord(Exception):
    """A stream entry that cannot be decoded: it is quarantined, never folded."""

    def __init__(self, position: str, reason: str, meta: Any = None) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason
        self.meta = meta


def decode(meta_bytes: bytes, body: bytes, position: str) -> PartialRecord:
    """A stream entry back as a record; :class:`PoisonRecord` when it is malformed."""
    try:
        meta = unpack(meta_bytes)
    except WireFormatError as exc:
        raise PoisonRecord(position, f"meta is not msgpack: {exc}") from exc
    try:
        groups = []
        offset = 0
        for g in meta["groups"]:
            size = int(g["size"])
            dtype = np.dtype(GROUP_DTYPES[str(g.get("dtype", "float32"))])
            nbytes = size * 4
            if size < 0 or offset + nbytes > len(body):
                raise ValueError("group sums run past the body")
            total = np.frombuffer(body, dtype, size, offset).copy()
            offset += nbytes
            groups.append(
                PartialGroup(
                    int(g["base"]),
                    int(g["round"]),
                    total,
                    float(g["weight_sum"]),
                    tuple(str(i) for i in g["ids"]),
                    tuple(float(w) for w in g["weights"]),
                )
            )
        if offset != len(body):
            raise ValueError("the body holds more than the groups")
        entries = [dict(e) for e in meta["entries"]]
        # one entry per update, in arrival order; the groups are in base-version order
        device = {str(e["id"]): str(e["device_id"]) for e in entries}
        ids = [i for g in groups for i in g.ids]
        if len(device) != len(entries) or len(ids) != len(entries) or set(ids) != set(device):
            raise ValueError("entries do not match the groups' ids")
        partial = Partial(  # each update's device, as its ledger entry names it
            tuple(dataclasses.replace(g, sources=tuple(device[i] for i in g.ids)) for g in groups)
        )
        return PartialRecord(
            str(meta["id"]), str(meta["replica"]), float(meta["at"]), partial, entries, position
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PoisonRecord(position, f"malformed partial: {exc!r}", meta) from exc


class RedisPartialQueue:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._ship = redis.register_script(SHIP)

    async def ship(
        self, task_id: str, meta: bytes, body: bytes, updates: Sequence[ShippedUpdate]
    ) -> str:
        """Append a partial and accept its sessions atomically; returns the stream id.
        Raises :class:`SessionsLost` (nothing stored) when a session was taken over."""
        keys = [
            self._keys.partials(task_id),
            self._keys.accepted(task_id),
            self._keys.active_sessions(task_id),
        ]
        args: list[Any] = [meta, body, len(updates), 0]
        ttl = 0
        for u in updates:
            keys.append(self._keys.session(task_id, u.claims.sid))
            args += [u.token, json.dumps(u.ack, separators=(",", ":"))]
            ttl = max(ttl, session_ttl_ms(u.claims))
        args += [u.claims.sid for u in updates]
        args[3] = ttl
        with redis_errors("update queue"):
            ok, value = await self._ship(keys=keys, args=args)
        if not ok:
            lost = updates[int(value) - 1].claims.sid
            raise SessionsLost(f"session {lost} was taken over by another upload")
        return value.decode() if isinstance(value, bytes) else str(value)

    async def consume(
        self, task_id: str, after: str
    ) -> AsyncIterator[PartialRecord | PoisonRecord]:
        """Every entry after ``after`` in order; malformed ones come as PoisonRecord."""
        stream = self._keys.partials(task_id)
        cursor = "0-0" if after == START else after
        backoff = RETRY_MIN_S
        while True:
            try:
                answer: Any = await self._redis.xread(
                    {stream: cursor}, count=READ_COUNT, block=BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                logger.warning("partial stream %s unreadable (%s); retrying", stream, exc)
                await asyncio.sleep(backoff)
                backoff = min(RETRY_MAX_S, backoff * 2)
                continue
            backoff = RETRY_MIN_S
            for _name, entries in answer or []:
                for raw_id, fields in entries:
                    cursor = raw_id.decode()
                    try:
                        yield decode(fields[b"m"], fields[b"b"], cursor)
                    except PoisonRecord as poison:
                        yield poison
                    except KeyError:
                        yield PoisonRecord(cursor, "entry lacks its fields")

    async def trim(self, task_id: str, upto: str) -> None:
        with redis_errors("update queue trim"):
            await self._redis.xtrim(
                self._keys.partials(task_id), minid=redis_after(upto), approximate=False
            )

    async def last_position(self, task_id: str) -> str:
        with redis_errors("update queue"):
            newest: Any = await self._redis.xrevrange(self._keys.partials(task_id), count=1)
        return str(newest[0][0].decode()) if newest else START

    def position_key(self, position: str) -> tuple[int, ...]:
        return position_key(position)

    async def appended_count(self, task_id: str) -> int:
        """Updates accepted into partials for the task (every replica)."""
        with redis_errors("update queue"):
            value = await self._redis.get(self._keys.accepted(task_id))
        return int(value or 0)

    async def pending_updates(self, task_id: str, after: str) -> list[str]:
        """Ids of the updates in the stream after ``after`` (not yet in a version)."""
        with redis_errors("update queue"):
            entries: Any = await self._redis.xrange(
                self._keys.partials(task_id),
                min=redis_after(after) if after != START else "-",
                max="+",
            )
        ids: list[str] = []
        for raw_id, fields in entries:
            try:
                ids += decode(fields[b"m"], fields[b"b"], raw_id.decode()).partial.ids
            except (PoisonRecord, KeyError):
                continue
        return ids

    async def close(self) -> None:
        return None
