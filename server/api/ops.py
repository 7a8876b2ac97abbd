"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.openapi import openapi_document
from server.services import SERVICES
from server.storage.database import ping


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/v1/openapi.json", openapi),
    ]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks = {
        "started": services.ready,
        "not_draining": not services.draining,
        "database": await ping(services.engine),
    }
    ok = all(checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    m = services.metrics
    now = time.time()
    for task_id, runtime in services.manager.runtimes.items():
        m.version.labels(task_id).set(runtime.state.version)
        m.active_sessions.labels(task_id).set(await services.sessions.active_count(task_id, now))
        m.buffered.labels(task_id).set(runtime.buffered())
        m.leading.labels(task_id).set(1 if runtime.leading else 0)
        budget = runtime.state.config.budget
        if budget is not None:
            m.epsilon.labels(task_id).set(budget.epsilon(runtime.state.version))
            m.epsilon_budget.labels(task_id).set(budget.config.target_epsilon)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
