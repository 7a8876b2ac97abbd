"""Training sessions: admission under a concurrency limit and single-use uploads.

A session is admitted only while its task has fewer than C active sessions. Its upload
moves it ``active -> uploading -> accepted | rejected``; a failed upload goes back to
``active`` so the device can retry. A retry of an accepted upload gets the stored
acknowledgement again: the update is applied once. Sessions a store does not know
(after a restart, or evicted) are re-created from their signed claims and flagged, so
the caller checks its ledger first. Deadlines are the caller's to enforce (a retry of
an accepted upload is answered even after the deadline).

Revocation lives here too, so it is checked where a session is admitted or claimed, on
every replica: a revoked device is refused admission and its open sessions cannot claim
an upload (:class:`DeviceRevoked`) from the moment :meth:`SessionStore.revoke_device`
returned.

The in-process store here is the embedded default; the Redis store (distributed mode)
implements the same :class:`SessionStore` protocol and passes the same contract tests.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from server.coordination.tokens import SessionClaims
from server.errors import Forbidden

# Keep finished sessions this long after their deadline, to answer retries.
FINISHED_RETENTION_S = 3600.0
# ... but the in-process store holds at most this many finished ones, dropping those past
# their deadline oldest first (never one before it). A retry of a forgotten accepted
# upload is still answered once, from the ledger (the session comes back ``recreated``);
# any other late upload is refused as expired.
MAX_RETAINED = 20_000


class DeviceRevoked(Forbidden):
    code = "device_revoked"


def session_ttl_ms(claims: SessionClaims) -> int:
    """How long a store keeps an upload's state: until an hour after the deadline."""
    return max(1000, int((claims.expires_at - time.time() + FINISHED_RETENTION_S) * 1000))


class UploadState(StrEnum):
    ACTIVE = "active"
    UPLOADING = "uploading"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Verdict(StrEnum):
    GRANTED = "granted"  # go ahead: this caller now owns the upload
    ACCEPTED = "accepted"  # already accepted: answer with the stored ack
    IN_PROGRESS = "in_progress"  # another request is uploading for this session now
    REJECTED = "rejected"  # refused before; the session is used up


@dataclass(frozen=True)
class Claim:
    """The answer to "may I upload for this session now?"."""

    verdict: Verdict
    ack: dict[str, Any] | None = None
    reason: str | None = None
    # The store did not know the session (a restart, an eviction) and re-created it from
    # its claims: the caller must check its ledger before treating the upload as new.
    recreated: bool = False
    # GRANTED: the token naming this claim (a distributed partial must present it)
    token: str = ""


class SessionStore(Protocol):
    async def admit(self, claims: SessionClaims, capacity: int, now: float) -> bool:
        """Take a concurrency slot; False when the task is full. DeviceRevoked if the
        device is revoked."""
        ...

    async def active_count(self, task_id: str, now: float) -> int: ...

    async def claim_upload(self, claims: SessionClaims, now: float) -> Claim: ...

    async def complete_upload(self, claims: SessionClaims, ack: dict[str, Any]) -> None: ...

    async def reject_upload(self, claims: SessionClaims, reason: str) -> None: ...

    async def release_upload(self, claims: SessionClaims, token: str = "") -> None:
        """Give an unfinished upload back (it may be retried); ``token``: only if this
        claim still holds it."""
        ...

    async def forget_task(self, task_id: str) -> None: ...

    async def revoke_device(self, device_id: str) -> None: ...

    async def load_revoked(self, device_ids: Iterable[str]) -> None:
        """Seed revocations from the database at start (idempotent)."""
        ...

    async def is_revoked(self, device_id: str) -> bool: ...


_VERDICTS = {
    UploadState.UPLOADING.value: Verdict.IN_PROGRESS,
    UploadState.ACCEPTED.value: Verdict.ACCEPTED,
    UploadState.REJECTED.value: Verdict.REJECTED,
}


# A session's entry: (state, ack as compact JSON, reason), the state as a plain str. A
# tuple of plain strs is untracked by the garbage collector once a collection has seen
# it, so hundreds of thousands of held sessions cost a full collection nothing. (They
# were two objects each, a dataclass and its claims: 300k sessions made every full
# collection pause the event loop for 0.8-1.4 s.) The ack is kept as one str (~100 B,
# decoded only for a retry) rather than a tuple of item tuples (~350 B).
_Entry = tuple[str, str | None, str | None]
_ACTIVE: _Entry = (UploadState.ACTIVE.value, None, None)
_UPLOADING: _Entry = (UploadState.UPLOADING.value, None, None)
_OPEN = frozenset({UploadState.ACTIVE.value, UploadState.UPLOADING.value})
_COMPACT = (",", ":")


@dataclass
class _TaskSessions:
    active: set[str] = field(default_factory=set)
    expiry: list[tuple[float, str]] = field(default_factory=list)  # heap of (expires_at, sid)


class InProcessSessionStore:
    """Sessions in a dict, with lazy expiry from a heap; one event loop, no locks needed.

    A session waits in its task's heap by deadline, finished or not; past its deadline
    it moves to the retention heap: dropped an hour after it, or as soon as more than
    ``max_retained`` are held, oldest first. A session before its deadline is never
    dropped, so the memory held is bounded by the sessions a deadline spans plus
    ``max_retained``, ~400 B each (a finished one: its state and its ack as one str).
    """

    def __init__(self, *, max_retained: int = MAX_RETAINED) -> None:
        self._entries: dict[str, _Entry] = {}
        self._tasks: dict[str, _TaskSessions] = {}
        self._retention: list[tuple[float, str]] = []  # heap of (expires_at, sid)
        self._max_retained = max_retained
        self._now = 0.0  # the latest time a caller passed in (finishing takes none)
        self._revoked: set[str] = set()

    def _task(self, task_id: str) -> _TaskSessions:
        return self._tasks.setdefault(task_id, _TaskSessions())

    def _expire(self, task: _TaskSessions, now: float) -> None:
        self._now = max(self._now, now)
        while task.expiry and task.expiry[0][0] < now:
            expires_at, sid = heapq.heappop(task.expiry)
            task.active.discard(sid)
            if sid in self._entries:
                # past its deadline: remembered only until retention ends (finished or not)
                heapq.heappush(self._retention, (expires_at, sid))
        self._trim(now)

    def _trim(self, now: float) -> None:
        cutoff = now - FINISHED_RETENTION_S
        retention = self._retention
        while retention:
            expires_at = retention[0][0]
            if expires_at >= now or (expires_at >= cutoff and len(retention) <= self._max_retained):
                break
            _, sid = heapq.heappop(retention)
            self._entries.pop(sid, None)

    async def admit(self, claims: SessionClaims, capacity: int, now: float) -> bool:
        if claims.device in self._revoked:
            raise DeviceRevoked("device is revoked")
        task = self._task(claims.task)
        self._expire(task, now)
        if len(task.active) >= capacity:
            return False
        self._add(task, claims)
        return True

    def _add(self, task: _TaskSessions, claims: SessionClaims) -> None:
        self._entries[claims.sid] = _ACTIVE
        task.active.add(claims.sid)
        heapq.heappush(task.expiry, (claims.expires_at, claims.sid))

    async def active_count(self, task_id: str, now: float) -> int:
        task = self._task(task_id)
        self._expire(task, now)
        return len(task.active)

    async def claim_upload(self, claims: SessionClaims, now: float) -> Claim:
        if claims.device in self._revoked:
            raise DeviceRevoked("device is revoked")
        self._now = max(self._now, now)
        entry = self._entries.get(claims.sid)
        recreated = entry is None
        if entry is None:
            self._add(self._task(claims.task), claims)
            entry = _ACTIVE
        state, ack, reason = entry
        if state == UploadState.ACTIVE:
            self._entries[claims.sid] = _UPLOADING
            return Claim(Verdict.GRANTED, recreated=recreated)
        return Claim(_VERDICTS[state], ack=None if ack is None else json.loads(ack), reason=reason)

    def _finish(self, claims: SessionClaims, entry: _Entry) -> None:
        # it stays in its task's expiry heap, which hands it to retention at its deadline
        self._entries[claims.sid] = entry
        self._task(claims.task).active.discard(claims.sid)

    async def complete_upload(self, claims: SessionClaims, ack: dict[str, Any]) -> None:
        packed = json.dumps(ack, separators=_COMPACT)
        self._finish(claims, (UploadState.ACCEPTED.value, packed, None))

    async def reject_upload(self, claims: SessionClaims, reason: str) -> None:
        self._finish(claims, (UploadState.REJECTED.value, None, reason))

    async def release_upload(self, claims: SessionClaims, token: str = "") -> None:
        entry = self._entries.get(claims.sid)
        if entry is not None and entry[0] == UploadState.UPLOADING:
            self._entries[claims.sid] = _ACTIVE

    async def forget_task(self, task_id: str) -> None:
        task = self._tasks.pop(task_id, None)
        if task is not None:
            for _, sid in task.expiry:  # every session before its deadline, finished or not
                self._entries.pop(sid, None)

    async def revoke_device(self, device_id: str) -> None:
        self._revoked.add(device_id)

    async def load_revoked(self, device_ids: Iterable[str]) -> None:
        self._revoked.update(device_ids)

    async def is_revoked(self, device_id: str) -> bool:
        return device_id in self._revoked
