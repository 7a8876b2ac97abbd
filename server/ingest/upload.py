"""The upload use case: everything that decides an update's fate, in one place.

:meth:`Ingest.upload` takes a task id and the raw body and returns the acknowledgement
or raises an :class:`~server.errors.AsyncflError` whose code says why not. In order:

1. parse the body strictly (:func:`server.updates.parse_update`) and verify the signed
   session token and its task: refusals here count by reason, no session is touched;
2. claim the session's single upload (:class:`~server.coordination.sessions.SessionStore`):
   a retry of an accepted upload is answered ``duplicate`` with the stored ack, a used
   session 409, an upload in flight 409, a revoked device 403; a session the store
   re-created after a restart is checked against the leader and the ledger first;
3. check the deadline (410), the base version (422) and the staleness bound (409);
4. fold it (validation included: shapes, dtypes, NaN/Inf, norm bound) into the task's
   sink: the embedded leader's aggregator, or this replica's partial for the task;
5. wait until it is durable (a group commit or a shipped partial) and answer.

Every refusal after step 2 uses the session up and leaves one ledger row with its
reason; a failure to make the update durable gives the session back (the device
retries) and answers 503. HTTP handlers only read the body, call this and serialise;
the logic-only bench server calls the same object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from server.coordination.locallog import AuditLog, AuditRecord
from server.coordination.rounds import RedisRounds
from server.coordination.sessions import Claim, DeviceRevoked, SessionStore, Verdict
from server.coordination.tokens import SessionClaims, TokenSigner
from server.errors import (
    AsyncflError,
    Conflict,
    Forbidden,
    SessionError,
    Unavailable,
    UpdateRejected,
)
from server.fleet.cost import cost_fields
from server.ingest.partials import Batch, ReplicaPartials
from server.metrics import Metrics
from server.secagg.provider import MaskServiceProvider
from server.storage.records import LedgerEntry
from server.tasks.leader import entry
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.manager import TaskRuntime
from server.tasks.state import TaskState
from server.updates import UpdatePayload, parse_update

logger = logging.getLogger(__name__)


class Ledger(Protocol):
    async def contains(self, update_id: str) -> bool: ...


class Tasks(Protocol):
    """What the use case needs of the task manager."""

    @property
    def ledger(self) -> Ledger: ...

    def get(self, task_id: str) -> TaskRuntime: ...


class Ingest:
    def __init__(
        self,
        *,
        signer: TokenSigner,
        sessions: SessionStore,
        manager: Tasks,
        metrics: Metrics,
        ledger_writer: LedgerWriter,
        partials: ReplicaPartials | None = None,
        rounds: RedisRounds | None = None,
        secagg: MaskServiceProvider | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = signer
        self._sessions = sessions
        self._manager = manager
        self._metrics = metrics
        self._ledger = ledger_writer
        self._partials = partials
        self._rounds = rounds
        self._secagg = secagg
        self._audit = audit
        self._clock = clock
        self.inflight = 0

    async def upload(self, task_id: str, body: bytes | bytearray | memoryview) -> dict[str, Any]:
        runtime = self._manager.get(task_id)
        state = runtime.state
        try:
            payload = parse_update(body)
            claims = session_claims(self._signer, state.id, payload.session)
        except AsyncflError as exc:  # refused before any session was touched
            self._count_refusal(state, exc.code)
            raise
        self.inflight += 1
        try:
            outcome = await self._accept(runtime, claims, payload, body)
            if isinstance(outcome, dict):
                return outcome
            # Folded: the update's bytes are no longer needed. Waiting for durability
            # holds none of them, so a slow commit (a busy disk, a starved CPU) queues
            # small acks, not hundreds of 400 KB bodies (the caller passes the body in
            # without keeping a reference of its own).
            del body, payload
            return await self._settle(runtime, claims, outcome)
        finally:
            self.inflight -= 1

    async def _accept(
        self,
        runtime: TaskRuntime,
        claims: SessionClaims,
        payload: UpdatePayload,
        body: bytes | bytearray | memoryview,
    ) -> dict[str, Any] | _Folded:
        """The answer when there is one already; else the update folded (or refused)."""
        state, now = runtime.state, self._clock()
        try:
            claim = await self._sessions.claim_upload(claims, now)
        except DeviceRevoked as exc:
            self._refused(state, claims, _row(payload), exc.code)
            raise
        # A fresh grant (the common case) needs no look at the ledger: no coroutine call
        if claim.verdict is not Verdict.GRANTED or claim.recreated:
            answer = await self._answer_known(runtime, claims, claim)
            if answer is not None:
                return answer
        try:
            self._check(state, claims, payload, now)
            if payload.masked or state.config.secure_aggregation is not None:
                await self._register_seed(state, claims, payload)
            pending = entry(
                claims.sid,
                state.id,
                claims.device,
                now,
                payload.base_version,
                payload.num_examples,
                **cost_fields(payload.metrics, len(body)),  # what it cost (the dashboard)
            )
            return await self._fold(runtime, claims, claim.token, payload, pending, body, now)
        except BaseException as exc:
            await self._failed(state, claims, claim.token, _row(payload), exc)
            raise

    async def _settle(
        self, runtime: TaskRuntime, claims: SessionClaims, folded: _Folded
    ) -> dict[str, Any]:
        """Wait until the folded update is durable; returns the acknowledgement."""
        state, ack = runtime.state, folded.ack
        try:
            if folded.audit is None:
                position = await folded.wait
            else:
                position, _ = await asyncio.gather(folded.wait, self._audit_append(folded))
            if self._partials is not None:
                ack["position"] = position  # the session was accepted with the ack as shipped
            else:
                await self._sessions.complete_upload(claims, ack)
        except BaseException as exc:
            await self._failed(state, claims, folded.token, folded.row, exc)
            raise
        state.observe_session(claims.issued_at, folded.received_at)
        task_metrics = self._metrics.task(state.id)
        task_metrics.accepted.inc()
        task_metrics.staleness.observe(ack["staleness"])
        return ack

    def _audit_append(self, folded: _Folded) -> Awaitable[Any]:
        assert self._audit is not None
        assert folded.audit is not None
        return self._audit.append(folded.audit)

    async def _failed(
        self,
        state: TaskState,
        claims: SessionClaims,
        token: str,
        row: tuple[int, int],
        exc: BaseException,
    ) -> None:
        """Account for an upload that was granted and did not go through, then the caller
        re-raises: a refusal uses the session up (one ledger row with its reason); any
        other failure gives the session back (the device retries) and answers 503."""
        if isinstance(exc, UpdateRejected | SessionError):
            await self._sessions.reject_upload(claims, exc.code)
            self._refused(state, claims, row, exc.code)
            return
        if isinstance(exc, AsyncflError | asyncio.CancelledError):
            await self._give_back(claims, token)
        if isinstance(exc, AsyncflError) and not isinstance(exc, Unavailable):
            raise Unavailable("the update could not be stored", code="queue_unavailable") from exc

    async def _answer_known(
        self, runtime: TaskRuntime, claims: SessionClaims, claim: Claim
    ) -> dict[str, Any] | None:
        """The answer when the claim is not a fresh grant (or is one for an update stored
        before this process knew its session); None to go ahead."""
        task_id = runtime.state.id
        if claim.verdict is Verdict.ACCEPTED:
            self._metrics.task(task_id).duplicate.inc()
            return dict(claim.ack or {}) | {"duplicate": True}
        if claim.verdict is Verdict.REJECTED:
            raise Conflict(
                f"this session's upload was refused ({claim.reason}); check in again",
                code="session_used",
            )
        if claim.verdict is Verdict.IN_PROGRESS:
            raise Conflict("an upload for this session is in progress", code="upload_in_progress")
        if not claim.recreated or not await self._seen(runtime, claims.sid):
            return None
        ack = {"status": "accepted", "update_id": claims.sid, "duplicate": True}
        await self._sessions.complete_upload(claims, ack)
        self._metrics.task(task_id).duplicate.inc()
        return ack

    async def _seen(self, runtime: TaskRuntime, update_id: str) -> bool:
        """Was this update stored before this process knew its session (a restart)?"""
        local = runtime.local
        if local is not None and local.knows(update_id):
            durable = local.durable(update_id)
            if durable is not None:
                await durable
            return True
        return await self._manager.ledger.contains(update_id)

    def _check(
        self, state: TaskState, claims: SessionClaims, payload: UpdatePayload, now: float
    ) -> None:
        """What can refuse an update before its tensors are looked at."""
        check_deadline(claims, now)
        if payload.base_version != claims.version:
            raise UpdateRejected(
                f"session was for version {claims.version}, update says {payload.base_version}",
                code="base_version_mismatch",
            )
        limit = state.config.aggregation.max_staleness
        staleness = state.version - payload.base_version
        if limit is not None and staleness > limit:
            raise UpdateRejected(
                f"staleness {staleness} is above the task's limit {limit}", code="too_stale"
            )

    async def _register_seed(
        self, state: TaskState, claims: SessionClaims, payload: UpdatePayload
    ) -> None:
        """Secure aggregation: the encoding must match the task, and the mask service must
        have accepted the update's sealed seed before it is folded."""
        secure = state.config.secure_aggregation
        if (secure is not None) != payload.masked:
            want = "masked-fixed32" if secure is not None else "float32"
            raise UpdateRejected(
                f"this task takes {want} updates, not {payload.encoding}", code="encoding_mismatch"
            )
        if secure is None:
            return
        assert payload.sealed is not None
        if self._secagg is None:
            raise Unavailable("no mask service here", code="secagg_unavailable")
        client = await self._secagg.client()
        await client.register(
            state.id,
            update_id=claims.sid,
            session_id=claims.sid,
            device_id=claims.device,
            threshold=secure.threshold,
            sealed=payload.sealed,
        )

    async def _fold(
        self,
        runtime: TaskRuntime,
        claims: SessionClaims,
        token: str,
        payload: UpdatePayload,
        pending: LedgerEntry,
        body: bytes | bytearray | memoryview,
        now: float,
    ) -> _Folded:
        """Fold into the task's sink: the embedded leader's open group, or this replica's
        partial (UpdateRejected: nothing changed)."""
        state = runtime.state
        wait: Awaitable[Any]
        if self._partials is not None:  # a replica: into this replica's partial
            ack: dict[str, Any] = {
                "status": "accepted",
                "update_id": claims.sid,
                "staleness": max(0, state.version - payload.base_version),
            }
            wait = await self._into_partial(state, claims, token, payload, pending, ack)
        else:
            local = runtime.local
            if local is None:
                raise Unavailable("no aggregator leads this task here", code="task_not_led")
            result, group = local.fold(pending, payload.tensors, now)
            ack = {
                "status": "accepted",
                "update_id": claims.sid,
                "position": str(group.seq),
                "staleness": result.staleness,
            }
            wait = group.wait()
        audit = None if self._audit is None else _audit_record(pending, body)
        return _Folded(ack, wait, token, _row(payload), now, audit)

    async def _into_partial(
        self,
        state: TaskState,
        claims: SessionClaims,
        token: str,
        payload: UpdatePayload,
        pending: LedgerEntry,
        ack: dict[str, Any],
    ) -> Awaitable[str]:
        """Fold into this replica's partial (a sync round's slot reserved first); returns
        the wait until it is shipped (its stream position)."""
        assert self._partials is not None
        round_id = claims.round if state.config.mode == "sync" and self._rounds else None
        if round_id is not None:
            assert self._rounds is not None
            if not await self._rounds.reserve(state.id, round_id):
                raise UpdateRejected(
                    f"round {round_id} has all its updates or is closed", code="round_closed"
                )
        try:
            batch = self._partials.shipper(state).add(
                claims, token, payload.tensors, pending, ack, round_id=round_id or 0
            )
        except BaseException:
            await self._unreserve(state, round_id)
            raise
        return self._shipped(state, round_id, batch)

    async def _shipped(self, state: TaskState, round_id: int | None, batch: Batch) -> str:
        try:
            return await batch.wait()
        except BaseException:
            await self._unreserve(state, round_id)
            raise

    async def _unreserve(self, state: TaskState, round_id: int | None) -> None:
        if round_id is not None:
            assert self._rounds is not None
            await self._rounds.unreserve(state.id, round_id)

    async def _give_back(self, claims: SessionClaims, token: str) -> None:
        try:
            await self._sessions.release_upload(claims, token)
        except AsyncflError as exc:  # the store is down too: the claim times out instead
            logger.warning("cannot give session %s back: %s", claims.sid, exc)

    def _count_refusal(self, state: TaskState, reason: str) -> None:
        state.rejected[reason] += 1
        self._metrics.updates.labels(state.id, "rejected").inc()
        self._metrics.rejections.labels(state.id, reason).inc()

    def _refused(
        self, state: TaskState, claims: SessionClaims, row: tuple[int, int], reason: str
    ) -> None:
        self._count_refusal(state, reason)
        self._ledger.add(
            [
                LedgerEntry(
                    id=claims.sid,
                    task_id=state.id,
                    device_id=claims.device,
                    created_at=self._clock(),
                    status="rejected",
                    reason=reason,
                    base_version=row[0],
                    num_examples=row[1],
                )
            ]
        )


@dataclass
class _Folded:
    """An update folded into its sink and not yet durable: what settling it needs, and
    none of the update's bytes (but for the audit record, when the audit log is on)."""

    ack: dict[str, Any]
    wait: Awaitable[Any]  # until durable (a group commit, a shipped partial)
    token: str  # the session claim's
    row: tuple[int, int]  # (base_version, num_examples): the ledger row of a refusal
    received_at: float
    audit: AuditRecord | None


def _row(payload: UpdatePayload) -> tuple[int, int]:
    return payload.base_version, payload.num_examples


def session_claims(signer: TokenSigner, task_id: str, token: object) -> SessionClaims:
    """The claims of a session token, checked for its signature and its task."""
    claims = signer.verify_session(token)
    if claims.task != task_id:
        raise Forbidden("session belongs to another task", code="session_task_mismatch")
    return claims


def check_deadline(claims: SessionClaims, now: float) -> None:
    if claims.expired(now):
        raise SessionError("the session's deadline has passed", code="session_expired")


def _audit_record(pending: LedgerEntry, body: bytes | bytearray | memoryview) -> AuditRecord:
    assert pending.base_version is not None
    assert pending.num_examples is not None
    return AuditRecord(
        update_id=pending.id,
        task_id=pending.task_id,
        device_id=pending.device_id,
        base_version=pending.base_version,
        num_examples=pending.num_examples,
        created_at=pending.created_at,
        body=body,
    )
