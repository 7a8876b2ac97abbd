"""The admin API behind the dashboard: fleet, fairness, cost and progress over time.

Every route needs the admin token. ``/live`` is what a task page reads when it opens
(and after a gap): the task's summary and, incrementally, everything its charts show;
then it follows the task's live snapshots (:mod:`server.api.live`). The other routes
serve each figure on its own::

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

from aiohttp import web

from server.api.admin import require_admin, status_of
from server.api.http import query_int, respond
from server.errors import Unavailable
from server.fleet.rollup import BUCKET_S, TaskRollup
from server.fleet.views import version_docs
from server.monitor.live import (
    charts_doc,
    cost_part,
    fleet_part,
    summary_doc,
    timeline_part,
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


def _monitor(services: Services) -> Monitor:
    if services.monitor is None:
        raise Unavailable("the monitor is not running yet", code="starting")
    return services.monitor


async def _task(request: web.Request) -> tuple[Services, Monitor, TaskRuntime, TaskRollup]:
    services = require_admin(request)
    monitor = _monitor(services)
    runtime = services.manager.get(request.match_info["task"])
    return services, monitor, runtime, await monitor.rollup(runtime)


async def overview(request: web.Request) -> web.Response:
    services = require_admin(request)
    monitor = _monitor(services)
    statuses = [await status_of(services, rt) for rt in services.manager.runtimes.values()]
    with monitor.meter.measure():
        doc = {"now": time.time(), "tasks": [summary_doc(s, monitor) for s in statuses]}
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


async def fleet(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        return respond(request, {"task": runtime.state.id, **fleet_part(monitor, rollup)})


async def cost(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        return respond(request, {"task": runtime.state.id, **cost_part(monitor, rollup)})


async def timeline(request: web.Request) -> web.Response:
    _, monitor, runtime, rollup = await _task(request)
    with monitor.meter.measure():
        since, bucket_s = _since(request)
        doc = timeline_part(monitor, rollup, since=since, bucket_s=bucket_s)
        return respond(request, {"task": runtime.state.id, **doc})


async def live(request: web.Request) -> web.Response:
    services, monitor, runtime, rollup = await _task(request)
    status = await status_of(services, runtime)
    since, bucket_s = _since(request)
    with monitor.meter.measure():
        doc = {
            "now": time.time(),
            "summary": summary_doc(status, monitor),
            **charts_doc(
                monitor, rollup, after_version=_after(request), since=since, bucket_s=bucket_s
            ),
        }
        return respond(request, doc)
