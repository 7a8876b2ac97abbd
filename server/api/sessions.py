"""Session endpoints beside the upload: federated evaluation reports and early release.

``POST /v1/tasks/{task}/evaluations`` records what a device measured on its own data for
the version it was given (when its check-in said ``evaluate``); results are averaged
per version, weighted by examples, and shown in the task's status as
``federated_eval``. ``POST /v1/tasks/{task}/sessions/release`` gives a session's
concurrency slot back early (a device that turned ineligible, or has too little time
left), instead of holding it until the deadline.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from server.api.device import SMALL_BODY, _services
from server.api.http import parse_body, respond
from server.coordination.sessions import DeviceRevoked, Verdict
from server.coordination.tokens import SessionClaims
from server.errors import BadRequest, Conflict
from server.ingest.upload import check_deadline, session_claims
from server.services import Services
from server.tasks.state import TaskState

METRIC_KEYS = frozenset({"loss", "accuracy", "num_examples"})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/tasks/{task}/evaluations", report_evaluation),
        web.post("/v1/tasks/{task}/sessions/release", release_session),
    ]


async def _claims(services: Services, state: TaskState, body: Any) -> SessionClaims:
    if not isinstance(body, dict):
        raise BadRequest("body must be a map", code="malformed_body")
    claims = session_claims(services.signer, state.id, body.get("session"))
    if await services.sessions.is_revoked(claims.device):
        raise DeviceRevoked("device is revoked")
    return claims


async def report_evaluation(request: web.Request) -> web.Response:
    services = _services(request)
    state = services.manager.get(request.match_info["task"]).state
    body = await parse_body(request, SMALL_BODY)
    claims = await _claims(services, state, body)
    check_deadline(claims, time.time())
    if body.get("version") != claims.version:
        raise Conflict(
            f"session was for version {claims.version}, report says {body.get('version')}",
            code="version_mismatch",
        )
    metrics = _metrics(body.get("metrics"))
    if not state.record_federated_eval(claims.sid, claims.version, metrics):
        return respond(request, {"status": "recorded", "duplicate": True})
    if services.monitor is not None:  # fleet hook: kept per device (tier), durably
        services.monitor.record_evaluation(
            claims.sid, state.id, claims.device, claims.version, metrics
        )
    return respond(request, {"status": "recorded"}, status=201)


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or set(value) - METRIC_KEYS or "loss" not in value:
        raise BadRequest(
            "metrics must be a map with loss, num_examples and optionally accuracy",
            code="bad_field",
        )
    out: dict[str, float] = {}
    for key, raw in value.items():
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise BadRequest(f"metric {key!r} must be a finite number", code="bad_field")
        out[key] = float(raw)
    if out.get("num_examples", 0) < 1 or out["loss"] < 0:
        raise BadRequest("num_examples must be >= 1 and loss >= 0", code="bad_field")
    if "accuracy" in out and not 0 <= out["accuracy"] <= 1:
        raise BadRequest("accuracy must be in [0, 1]", code="bad_field")
    return out


async def release_session(request: web.Request) -> web.Response:
    services = _services(request)
    state = services.manager.get(request.match_info["task"]).state
    claims = await _claims(services, state, await parse_body(request, SMALL_BODY))
    claim = await services.sessions.claim_upload(claims, time.time())
    if claim.verdict is Verdict.GRANTED:
        await services.sessions.reject_upload(claims, "released")
    # an upload in flight or already accepted or refused keeps its outcome
    return web.Response(status=204)
