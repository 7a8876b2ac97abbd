"""The v1 device API: enroll, check in, fetch artifacts and parameters, upload updates.

Handlers parse, call the core, and serialise; they hold no FL logic of their own.
"""

from __future__ import annotations

import hmac
import json
import random
import time
import uuid
from typing import Any

from aiohttp import web

from client_sdk.errors import WireFormatError
from client_sdk.wire import check_tree
from server.aggregation import validate_update
from server.api.http import parse_body, parse_version, read_body, respond
from server.coordination.queue import QueuedUpdate
from server.coordination.sessions import Verdict
from server.coordination.tokens import SessionClaims
from server.errors import (
    AsyncflError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    SessionError,
    Unauthorized,
    Unavailable,
    UpdateRejected,
)
from server.services import SERVICES, Services
from server.storage.records import DeviceRecord, LedgerEntry
from server.tasks.manager import TaskRuntime
from server.updates import UpdatePayload, parse_update

SMALL_BODY = 64 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
DEVICE_INFO_BYTES = 4096
DEVICE_INFO_DEPTH = 4


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/devices/enroll", enroll),
        web.post("/v1/tasks/{task}/checkin", checkin),
        web.get("/v1/artifacts/{digest}", artifact),
        web.get("/v1/tasks/{task}/versions/{version}/params", params),
        web.post("/v1/tasks/{task}/updates", upload),
    ]


# -- helpers ------------------------------------------------------------------------------
def _services(request: web.Request) -> Services:
    services = request.app[SERVICES]
    if services.draining:
        raise Unavailable("server is shutting down", retry_after=5.0, code="draining")
    if not services.ready:
        raise Unavailable("server is starting", retry_after=2.0, code="starting")
    return services


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("missing bearer token", code="missing_token")
    return header[7:].strip()


async def _device(request: web.Request, services: Services) -> str:
    device_id = services.signer.verify_device(_bearer(request))
    if device_id in services.revoked:
        raise Forbidden("device is revoked", code="device_revoked")
    wait = await services.rate_limiter.acquire(device_id)
    if wait > 0:
        raise RateLimited("too many requests from this device", retry_after=wait)
    return device_id


def _device_info(value: Any) -> dict[str, Any]:
    """A device's self-description: a map of JSON values (no bin), shallow and small."""
    if isinstance(value, dict):
        try:
            check_tree(value, max_depth=DEVICE_INFO_DEPTH)
            text = json.dumps(value, allow_nan=False)
        except (WireFormatError, TypeError, ValueError):
            pass
        else:
            if len(text) <= DEVICE_INFO_BYTES:
                return value
    raise BadRequest(
        f"device_info must be a map of JSON values (no bin, no NaN), at most "
        f"{DEVICE_INFO_DEPTH} levels deep and {DEVICE_INFO_BYTES} bytes as JSON",
        code="bad_field",
    )


def _etag_response(
    request: web.Request, digest: str, body: bytes, content_type: str
) -> web.Response:
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


# -- enrollment ---------------------------------------------------------------------------
async def enroll(request: web.Request) -> web.Response:
    services = _services(request)
    body = await parse_body(request, SMALL_BODY)
    if not isinstance(body, dict):
        raise BadRequest("body must be a map", code="malformed_body")
    key = body.get("enrollment_key")
    if not isinstance(key, str) or not hmac.compare_digest(
        key.encode(), services.settings.enrollment_key.encode()
    ):
        raise Unauthorized("wrong enrollment key", code="invalid_enrollment_key")
    info = _device_info(body.get("device_info", {}))
    device_id = uuid.uuid4().hex
    await services.devices.create(DeviceRecord(device_id, time.time(), info))
    return respond(
        request,
        {"device_id": device_id, "device_token": services.signer.device_token(device_id)},
        status=201,
    )


# -- check-in -----------------------------------------------------------------------------
async def checkin(request: web.Request) -> web.Response:
    services = _services(request)
    device_id = await _device(request, services)
    runtime = services.manager.get(request.match_info["task"])
    state = runtime.state
    body = await parse_body(request, SMALL_BODY)
    if not isinstance(body, dict):
        raise BadRequest("body must be a map", code="malformed_body")
    if not isinstance(body.get("sdk_version", ""), str):
        raise BadRequest("sdk_version must be a string", code="bad_field")
    _device_info(body.get("device_info", {}))
    metrics = services.metrics
    if state.paused:
        metrics.checkins.labels(state.id, "paused").inc()
        return respond(request, _turned_away("task_paused", 30.0 * (0.5 + random.random())))
    now = time.time()
    deadline_s = state.config.session_deadline_s or services.settings.session_deadline_s
    expires_at = now + deadline_s
    version = state.version
    if state.config.mode == "sync":
        admitted_round = _admit_to_round(runtime, device_id, now)
        if admitted_round is None:
            metrics.checkins.labels(state.id, "no_slot").inc()
            return respond(request, _turned_away("no_slot", state.retry_after(random.random())))
        version, expires_at = admitted_round
    claims = SessionClaims(uuid.uuid4().hex, state.id, device_id, version, now, expires_at)
    if state.config.mode != "sync" and not await services.sessions.admit(
        claims, state.config.concurrency, now
    ):
        metrics.checkins.labels(state.id, "no_slot").inc()
        return respond(request, _turned_away("no_slot", state.retry_after(random.random())))
    metrics.checkins.labels(state.id, "admitted").inc()
    artifacts = {k: v for k, v in state.record.artifacts.items() if k != "params0"}
    return respond(
        request,
        {
            "admitted": True,
            "session": services.signer.session_token(claims),
            "session_id": claims.sid,
            "task": state.id,
            "version": version,
            "deadline": expires_at,
            "deadline_s": expires_at - now,
            "plan": _plan(state.config.plan),
            "artifacts": artifacts,
            "params": {
                "version": version,
                "url": f"/v1/tasks/{state.id}/versions/{version}/params",
            },
            "encoding": "float32",
            "evaluate": random.random() < state.config.federated_eval_fraction,
            "train": True,
        },
    )


def _admit_to_round(runtime: TaskRuntime, device_id: str, now: float) -> tuple[int, float] | None:
    if runtime.worker is None:
        raise Unavailable("this replica does not run sync rounds", code="sync_unavailable")
    current = runtime.worker.admit_to_round(device_id, now)
    if current is None:
        return None
    return current.version, current.deadline


def _turned_away(reason: str, retry_after: float) -> dict[str, Any]:
    return {"admitted": False, "reason": reason, "retry_after": retry_after}


def _plan(plan: Any) -> dict[str, Any]:
    return {
        "lr": plan.lr,
        "batch_size": plan.batch_size,
        "epochs": plan.epochs,
        "max_steps": plan.max_steps,
        "time_budget_s": plan.time_budget_s,
    }


# -- artifacts ----------------------------------------------------------------------------
async def artifact(request: web.Request) -> web.Response:
    services = _services(request)
    await _device(request, services)
    digest = request.match_info["digest"]
    allowed = {
        d for rt in services.manager.runtimes.values() for k, d in rt.state.record.artifacts.items()
    }
    if digest not in allowed:
        raise NotFound(f"no artifact {digest}", code="unknown_artifact")
    body = await services.blobs.get(digest)
    return _etag_response(request, digest, body, "application/octet-stream")


async def params(request: web.Request) -> web.Response:
    services = _services(request)
    await _device(request, services)
    state = services.manager.get(request.match_info["task"]).state
    version = parse_version(request.match_info["version"], state.version)
    published = state.published
    if version == published.version:
        return _etag_response(
            request, published.params_blob, published.params, "application/msgpack"
        )
    if version > published.version:
        raise NotFound(f"version {version} is not committed yet", code="unknown_version")
    record = await services.manager.repo.version(state.id, version)
    body = await services.blobs.get(record.params_blob)
    return _etag_response(request, record.params_blob, body, "application/msgpack")


# -- upload -------------------------------------------------------------------------------
async def upload(request: web.Request) -> web.Response:
    services = _services(request)
    runtime = services.manager.get(request.match_info["task"])
    state = runtime.state
    try:
        body = await read_body(request, services.settings.max_body_bytes)
        payload = parse_update(body)
        claims = services.signer.verify_session(payload.session)
        if claims.task != state.id:
            raise Forbidden("session belongs to another task", code="session_task_mismatch")
    except AsyncflError as exc:  # refused before any session was touched
        state.rejected[exc.code] += 1
        services.metrics.updates.labels(state.id, "rejected").inc()
        services.metrics.rejections.labels(state.id, exc.code).inc()
        raise
    services.inflight_uploads += 1
    try:
        ack = await _accept(services, runtime, claims, payload, body)
    finally:
        services.inflight_uploads -= 1
    return respond(request, ack, msgpack_default=True)


async def _accept(
    services: Services,
    runtime: TaskRuntime,
    claims: SessionClaims,
    payload: UpdatePayload,
    body: bytes,
) -> dict[str, Any]:
    state, metrics, now = runtime.state, services.metrics, time.time()
    claim = await services.sessions.claim_upload(claims, now)
    if claim.verdict is Verdict.ACCEPTED:
        metrics.updates.labels(state.id, "duplicate").inc()
        return dict(claim.ack or {}) | {"duplicate": True}
    if (
        claim.verdict is Verdict.GRANTED
        and claim.recreated
        and await _seen(services, runtime, claims.sid)
    ):
        await services.sessions.complete_upload(claims, {"status": "accepted"})
        metrics.updates.labels(state.id, "duplicate").inc()
        return {"status": "accepted", "update_id": claims.sid, "duplicate": True}
    if claim.verdict is Verdict.REJECTED:
        raise Conflict(
            f"this session's upload was refused ({claim.reason}); check in again",
            code="session_used",
        )
    if claim.verdict is Verdict.IN_PROGRESS:
        raise Conflict("an upload for this session is in progress", code="upload_in_progress")
    try:
        norm = _check(state, claims, payload, now)
        position = await services.queue.append(
            QueuedUpdate(
                update_id=claims.sid,
                task_id=state.id,
                device_id=claims.device,
                base_version=payload.base_version,
                num_examples=payload.num_examples,
                created_at=now,
                body=body,
                metrics=payload.metrics,
                tensors=payload.tensors,
                norm=norm,
            )
        )
    except (UpdateRejected, SessionError) as exc:
        await _refuse(services, state.id, claims, payload, exc.code)
        raise
    except AsyncflError as exc:
        await services.sessions.release_upload(claims)  # nothing durable: the device may retry
        if exc.status >= 500:
            raise Unavailable(
                f"cannot store the update now: {exc.message}", code="queue_unavailable"
            ) from exc
        raise
    staleness = state.version - payload.base_version
    ack = {
        "status": "accepted",
        "update_id": claims.sid,
        "position": position,
        "staleness": staleness,
    }
    await services.sessions.complete_upload(claims, ack)
    state.observe_session(claims.issued_at, now)
    metrics.updates.labels(state.id, "accepted").inc()
    metrics.staleness.labels(state.id).observe(staleness)
    return ack


def _check(state: Any, claims: SessionClaims, payload: UpdatePayload, now: float) -> float:
    """Everything that can refuse an update before it is acknowledged; returns its norm."""
    if claims.expired(now):
        raise SessionError("the session's deadline has passed", code="session_expired", status=410)
    if payload.base_version != claims.version:
        raise UpdateRejected(
            f"session was for version {claims.version}, update says {payload.base_version}",
            code="base_version_mismatch",
        )
    config = state.config.aggregation
    staleness = state.version - payload.base_version
    if config.max_staleness is not None and staleness > config.max_staleness:
        raise UpdateRejected(
            f"staleness {staleness} is above the task's limit {config.max_staleness}",
            code="too_stale",
            status=409,
        )
    return validate_update(state.spec, payload.tensors, max_norm=config.max_update_norm)


async def _seen(services: Services, runtime: TaskRuntime, update_id: str) -> bool:
    """Was this update accepted before this process knew its session (a restart)?"""
    if runtime.knows_update(update_id):
        return True
    return await services.manager.ledger.contains(update_id)


async def _refuse(
    services: Services, task_id: str, claims: SessionClaims, payload: UpdatePayload, reason: str
) -> None:
    await services.sessions.reject_upload(claims, reason)
    services.metrics.updates.labels(task_id, "rejected").inc()
    services.metrics.rejections.labels(task_id, reason).inc()
    services.manager.get(task_id).state.rejected[reason] += 1
    services.ledger_writer.add(
        [
            LedgerEntry(
                id=claims.sid,
                task_id=task_id,
                device_id=claims.device,
                created_at=time.time(),
                status="rejected",
                reason=reason,
                base_version=payload.base_version,
                num_examples=payload.num_examples,
            )
        ]
    )
