"""The admin API behind the dashboard: fleet, fairness, cost and progress over time.

Every route needs the admin token. ``/live`` is what an open task page polls (once a
second at most): the task's summary and, incrementally, everything its charts show;
the other routes serve each figure on its own::

    GET /admin/v1/overview                     every task: state, version, rates
    GET /admin/v1/tasks/{task}/history         per version: accuracy, loss, tiers, cost
    GET /admin/v1/tasks/{task}/fleet           per tier: participation, staleness, accuracy
    GET /admin/v1/tasks/{task}/cost            energy, CO2e, seconds, bytes: total, by tier
    GET /admin/v1/tasks/{task}/timeline        updates and check-ins per time bucket,
                                               the staleness histogram
    GET /admin/v1/tasks/{task}/live            all of the above for one task

``history`` and ``live`` take ``after_version`` (versions after it, plus the newest
``TAIL_VERSIONS`` again, whose late metrics may have landed); ``timeline`` and ``live``
take ``since`` (UNIX seconds) and ``bucket_s``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from server.api.admin import require_admin, status_of
from server.api.http import query_int, respond
from server.errors import Unavailable
from server.fleet.rollup import BUCKET_S, TaskRollup
from server.fleet.views import (
    checkin_totals,
    cost_doc,
    latest_gap,
    staleness_doc,
    tier_table,
    timeline_doc,
    version_docs,
)
from server.monitor.service import Monitor
from server.services import Services
from server.tasks.manager import TaskRuntime

MAX_UNIX = 2**40


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/v1/overview", overview),
        web.get("/admin/v1/tasks/{task}/history", history),
        web.get("/admin/v1/tasks/{task}/fleet", fleet),
        web.get("/admin/v1/tasks/{task}/cost", cost),
        web.get("/admin/v1/tasks/{task}/timeline", timeline),
        web.get("/admin/v1/tasks/{task}/live", live),
    ]


def state_of(status: dict[str, Any]) -> str:
    """running, paused or budget_reached.

    Privacy budgets arrive with the differential-privacy work: its status field
    ``privacy`` = ``{"epsilon": spent, "epsilon_budget": budget, "budget_reached": bool}``
    (or a status of ``budget_reached``) is shown as is once the task status carries it.
    """
    privacy = status.get("privacy")
    if status.get("status") == "budget_reached" or (
        isinstance(privacy, dict) and privacy.get("budget_reached")
    ):
        return "budget_reached"
    return "paused" if status.get("status") == "paused" else "running"


def _monitor(services: Services) -> Monitor:
    if services.monitor is None:
        raise Unavailable("the monitor is not running yet", code="starting")
    return services.monitor


async def _task(request: web.Request) -> tuple[Services, Monitor, TaskRuntime, TaskRollup]:
    services = require_admin(request)
    monitor = _monitor(services)
    runtime = services.manager.get(request.match_info["task"])
    return services, monitor, runtime, await monitor.rollup(runtime)


def _summary(status: dict[str, Any], monitor: Monitor) -> dict[str, Any]:
    last_eval = status.get("last_eval") or {}
    federated = status.get("federated_eval") or {}
    return {
        "id": status["id"],
        "model": status["model"],
        "mode": status["mode"],
        "state": state_of(status),
        "version": status["version"],
        "active_sessions": status["active_sessions"],
        "concurrency": status["concurrency"],
        "updates_per_s": monitor.updates_per_s(status["id"]),
        "updates_accepted": status["updates_accepted"],
        "updates_applied": status["updates_applied"],
        "commit_lag": status["updates_buffered"],
        "accuracy": last_eval.get("accuracy"),
        "accuracy_version": last_eval.get("version"),
        "federated_accuracy": federated.get("accuracy"),
        "privacy": status.get("privacy"),
    }


async def overview(request: web.Request) -> web.Response:
    services = require_admin(request)
    monitor = _monitor(services)
    statuses = [await status_of(services, rt) for rt in services.manager.runtimes.values()]
    with monitor.meter.measure():
        doc = {"now": time.time(), "tasks": [_summary(s, monitor) for s in statuses]}
        return respond(request, doc)


def _after(request: web.Request) -> int:
    if "after_version" not in request.query:
        return -1
    return query_int(request, "after_version", 0, 0, 2**31)


def _since(request: web.Request) -> tuple[int, int]:
    since = query_int(request, "since", 0, 0, MAX_UNIX)
    return since, query_int(request, "bucket_s", BUCKET_S, BUCKET_S, 86_400)


async def history(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        doc = {
            "task": runtime.state.id,
            "versions": version_docs(rollup, after_version=_after(request)),
        }
        return respond(request, doc)


def _fleet_doc(monitor: Monitor, rollup: TaskRollup) -> dict[str, Any]:
    return {
        "tiers": monitor.memo(
            rollup, "tiers", lambda: tier_table(rollup, monitor.rollups.enrolled)
        ),
        "gap": monitor.memo(rollup, "gap", lambda: latest_gap(rollup)),
    }


async def fleet(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        return respond(request, {"task": runtime.state.id, **_fleet_doc(monitor, rollup)})


async def cost(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        doc = monitor.memo(rollup, "cost", lambda: cost_doc(rollup))
        return respond(request, {"task": runtime.state.id, **doc})


def _timeline(monitor: Monitor, rollup: TaskRollup, request: web.Request) -> dict[str, Any]:
    since, bucket_s = _since(request)
    return {
        **timeline_doc(rollup, since=since, bucket_s=bucket_s),
        "staleness": monitor.memo(rollup, "staleness", lambda: staleness_doc(rollup)),
        "checkins": monitor.memo(rollup, "checkins", lambda: checkin_totals(rollup)),
    }


async def timeline(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        return respond(request, {"task": runtime.state.id, **_timeline(monitor, rollup, request)})


async def live(request: web.Request) -> web.Response:
    services, monitor, runtime, rollup = await _task(request)
    status = await status_of(services, runtime)
    with monitor.meter.measure():
        doc = {
            "now": time.time(),
            "summary": _summary(status, monitor),
            "versions": version_docs(rollup, after_version=_after(request)),
            **_fleet_doc(monitor, rollup),
            "cost": monitor.memo(rollup, "cost", lambda: cost_doc(rollup)),
            "timeline": _timeline(monitor, rollup, request),
        }
        return respond(request, doc)
