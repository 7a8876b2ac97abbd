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
from server.api.http import parse_body, parse_version, read_body, respond
from server.coordination.sessions import DeviceRevoked
from server.coordination.tokens import SessionClaims
from server.errors import (
    BadRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from server.services import SERVICES, Services
from server.storage.records import DeviceRecord
from server.tasks.manager import TaskRuntime

SMALL_BODY = 64 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
DEVICE_INFO_BYTES = 4096
DEVICE_INFO_DEPTH = 4


def routes() -> list[web.RouteDef]:
    # aiohttp tries the dynamic routes under /v1/tasks in this order, a regex each:
    # the busiest first
    return [
        web.post("/v1/tasks/{task}/updates", upload),
        web.post("/v1/tasks/{task}/checkin", checkin),
        web.post("/v1/devices/enroll", enroll),
        web.get("/v1/artifacts/{digest}", artifact),
        web.get("/v1/tasks/{task}/versions/{version}/params", params),
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
    if await services.sessions.is_revoked(device_id):
        raise DeviceRevoked("device is revoked")
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
    budget = state.config.budget
    if budget is not None:
        if budget.reached(state.version):
            metrics.checkins.labels(state.id, "privacy_budget_reached").inc()
            return respond(request, _turned_away("privacy_budget_reached", 3600.0))
        # the accountant assumes one check-in per device every min_separation versions
        if not await services.participation.allowed(
            state.id, device_id, state.version, budget.config.min_separation
        ):
            return _participation_refused(request, services, state)
    now = time.time()
    deadline_s = state.config.session_deadline_s or services.settings.session_deadline_s
    expires_at = now + deadline_s
    version, round_id = state.version, 0
    if state.config.mode == "sync":
        admitted_round = await _admit_to_round(services, runtime, device_id, now)
        if admitted_round is None:
            metrics.checkins.labels(state.id, "no_slot").inc()
            return respond(request, _turned_away("no_slot", state.retry_after(random.random())))
        version, expires_at, round_id = admitted_round
    encoding = await _encoding(services, state)  # before a slot is taken: it may fail
    claims = SessionClaims(
        uuid.uuid4().hex, state.id, device_id, version, now, expires_at, round=round_id
    )
    if state.config.mode != "sync" and not await services.sessions.admit(
        claims, state.config.concurrency, now
    ):
        metrics.checkins.labels(state.id, "no_slot").inc()
        return respond(request, _turned_away("no_slot", state.retry_after(random.random())))
    if budget is not None and not await services.participation.admit(
        state.id, device_id, version, budget.config.min_separation
    ):  # a concurrent check-in of this device won the race; its slot expires unused
        return _participation_refused(request, services, state)
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
            "evaluate": random.random() < state.config.federated_eval_fraction,
            "train": True,
            **encoding,
        },
    )


async def _encoding(services: Services, state: Any) -> dict[str, Any]:
    """How the device must encode its update: plainly, or masked for secure aggregation
    (the mask service's key, its operator signature, the fixed-point parameters)."""
    secure = state.config.secure_aggregation
    if secure is None:
        return {"encoding": "float32"}
    key = await (await services.secagg.client()).key()
    return {
        "encoding": "masked-fixed32",
        "secure_aggregation": {
            "mask_key": key.public_key,
            "mask_key_signature": key.signature,
            "fixed_point": secure.fixed_point(state.config.aggregation).to_dict(),
            "threshold": secure.threshold,
        },
    }


async def _admit_to_round(
    services: Services, runtime: TaskRuntime, device_id: str, now: float
) -> tuple[int, float, int] | None:
    """Select the device into the open sync round: the embedded leader's, or the one the
    distributed leader shares in Redis. ``(version, deadline, round id)`` or None."""
    if runtime.local is not None:
        current = runtime.local.admit_to_round(device_id, now)
        return None if current is None else (current.version, current.deadline, current.round_id)
    if services.rounds is None:
        raise Unavailable("no sync round is run here", code="sync_unavailable")
    shared = await services.rounds.select(runtime.state.id, device_id, now, runtime.state.version)
    return None if shared is None else (shared.version, shared.deadline, shared.round_id)


def _participation_refused(request: web.Request, services: Services, state: Any) -> web.Response:
    """The device checked in less than ``min_separation`` versions ago (DP tasks)."""
    services.metrics.checkins.labels(state.id, "participation_limit").inc()
    wait = max(1.0, state.session_seconds_ewma) * (0.5 + random.random())
    return respond(request, _turned_away("participation_limit", round(wait, 3)))


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
    digest = await services.manager.repo.params_blob(state.id, version)
    body = await services.blobs.get(digest)
    return _etag_response(request, digest, body, "application/msgpack")


# -- upload -------------------------------------------------------------------------------
async def upload(request: web.Request) -> web.Response:
    services = _services(request)
    task, limit = request.match_info["task"], services.settings.max_body_bytes
    # the body goes straight in: ingest drops it once folded, before waiting for durability
    ack = await services.ingest.upload(task, await read_body(request, limit))
    return respond(request, ack, msgpack_default=True)
