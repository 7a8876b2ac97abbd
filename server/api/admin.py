"""The admin API (bearer admin token; JSON or MessagePack): tasks, status, versions."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from aiohttp import web

from server.api.http import parse_body, parse_int, parse_version, query_int, respond
from server.errors import BadRequest, Unauthorized
from server.services import SERVICES, Services
from server.tasks import artifacts
from server.tasks.config import TaskConfig
from server.tasks.deploy import inference_model
from server.tasks.manager import CreateTask, TaskRuntime

CREATE_FIELDS = frozenset({"id", "model", "bundle", "client_optimizer", "config", "evaluation"})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/v1/tasks", create_task),
        web.get("/admin/v1/tasks", list_tasks),
        web.get("/admin/v1/tasks/{task}", task_status),
        web.post("/admin/v1/tasks/{task}/pause", pause_task),
        web.post("/admin/v1/tasks/{task}/resume", resume_task),
        web.get("/admin/v1/tasks/{task}/versions", list_versions),
        web.get("/admin/v1/tasks/{task}/versions/{version}/model.onnx", download_model),
        web.post("/admin/v1/devices/{device}/revoke", revoke_device),
    ]


def require_admin(request: web.Request) -> Services:
    services = request.app[SERVICES]
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), services.settings.admin_token.encode()):
        raise Unauthorized("admin token missing or wrong", code="invalid_admin_token")
    return services


async def create_task(request: web.Request) -> web.Response:
    services = require_admin(request)
    body = await parse_body(request, services.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object", code="malformed_body")
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise BadRequest(f"unknown fields: {sorted(unknown)}", code="unknown_field")
    task_id = body.get("id")
    if not isinstance(task_id, str):
        raise BadRequest("id (string) is required", code="missing_field")
    config = TaskConfig.from_dict(body.get("config", {}))
    if ("model" in body) == ("bundle" in body):
        raise BadRequest("give exactly one of model (a zoo name) or bundle", code="bad_model")
    if "model" in body:
        model, optimizer = body["model"], body.get("client_optimizer", "sgd")
        if not isinstance(model, str):
            raise BadRequest("model must be a zoo name or module:factory", code="bad_model")
        if not isinstance(optimizer, str):
            raise BadRequest("client_optimizer must be a string", code="bad_field")
        bundle = await services.manager.export_zoo(model, optimizer)
    else:
        bundle = artifacts.bundle_from_upload(body["bundle"])
    eval_set = await asyncio.to_thread(
        artifacts.eval_set_from_request, body.get("evaluation"), bundle.manifest
    )
    runtime = await services.manager.create(CreateTask(task_id, config, bundle, eval_set))
    if services.leadership is not None:  # aggregate it here right away if we can
        await services.leadership.try_lead(task_id)
        await services.manager.settled(task_id)  # a start the leadership loop began
    return respond(request, await status_of(services, runtime), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    services = require_admin(request)
    tasks = [await status_of(services, rt) for rt in services.manager.runtimes.values()]
    return respond(request, {"tasks": tasks})


async def task_status(request: web.Request) -> web.Response:
    services = require_admin(request)
    runtime = services.manager.get(request.match_info["task"])
    return respond(request, await status_of(services, runtime))


async def pause_task(request: web.Request) -> web.Response:
    services = require_admin(request)
    runtime = await services.manager.set_paused(request.match_info["task"], True)
    return respond(request, await status_of(services, runtime))


async def resume_task(request: web.Request) -> web.Response:
    services = require_admin(request)
    runtime = await services.manager.set_paused(request.match_info["task"], False)
    return respond(request, await status_of(services, runtime))


async def list_versions(request: web.Request) -> web.Response:
    services = require_admin(request)
    state = services.manager.get(request.match_info["task"]).state
    limit = query_int(request, "limit", 100, 1, 10_000)
    before = request.query.get("before")
    rows = await services.manager.repo.versions(
        state.id, limit=limit, before=None if before is None else parse_int(before, "before")
    )
    return respond(
        request,
        {
            "task": state.id,
            "versions": [
                {
                    "version": r.version,
                    "created_at": r.created_at,
                    "num_updates": r.num_updates,
                    "mean_staleness": r.mean_staleness,
                    "metrics": r.metrics,
                    "params_sha256": r.params_blob,
                }
                for r in rows
            ],
        },
    )


async def download_model(request: web.Request) -> web.Response:
    services = require_admin(request)
    state = services.manager.get(request.match_info["task"]).state
    version = parse_version(request.match_info["version"], state.version)
    digest = await services.manager.repo.params_blob(state.id, version)
    params = artifacts.decode_version_params(await services.blobs.get(digest), state.manifest)
    graph = await services.blobs.get(state.record.artifacts["infer"])
    model = await asyncio.to_thread(inference_model, graph, state.manifest, params)
    return web.Response(
        body=model,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{state.id}-v{version}.onnx"',
            "X-Asyncfl-Version": str(version),
        },
    )


async def revoke_device(request: web.Request) -> web.Response:
    services = require_admin(request)
    device_id = request.match_info["device"]
    await services.devices.revoke(device_id)
    await services.sessions.revoke_device(device_id)  # every replica refuses it from now
    return respond(request, {"device_id": device_id, "revoked": True})


async def status_of(services: Services, runtime: TaskRuntime) -> dict[str, Any]:
    """The task status document (see the README's admin API reference)."""
    state = runtime.state
    agg = state.config.aggregation
    leader = runtime.leader
    accepted = await services.manager.accepted(state.id)
    mean_staleness = None
    if leader is not None:
        mean_staleness = leader.aggregator.stats.staleness_mean
    return {
        "id": state.id,
        "status": "paused" if state.paused else "active",
        "model": state.record.model,
        "mode": state.config.mode,
        "version": state.version,
        "concurrency": state.config.concurrency,
        "aggregation_goal": agg.aggregation_goal,
        "active_sessions": await services.sessions.active_count(state.id, time.time()),
        "updates_accepted": accepted,
        "updates_applied": state.applied,
        # a replica that does not aggregate the task derives it from the counts it has
        "updates_buffered": (
            runtime.buffered()
            if runtime.leading
            else max(0, accepted - state.applied - state.dropped)
        ),
        "aggregated_here": runtime.leading,
        "updates_dropped": state.dropped,
        "updates_rejected": dict(sorted(state.rejected.items())),
        "mean_staleness": mean_staleness,
        "last_eval": state.last_eval,
        "federated_eval": state.federated_eval(),
        "created_at": state.record.created_at,
        "config": state.config.to_dict(),
        "artifacts": state.record.artifacts,
        **_privacy(state),
    }


def _privacy(state: Any) -> dict[str, Any]:
    """``privacy`` (what the dashboard reads), ``privacy_accounting`` and the reason a
    task paused by its budget is paused; nothing for a task without a budget."""
    budget = state.config.budget
    if budget is None:
        return {}
    reached = budget.reached(state.version)
    return {
        "privacy": budget.status(state.version),
        "privacy_accounting": budget.details(),
        "status_reason": "privacy_budget_reached" if reached and state.paused else None,
    }
