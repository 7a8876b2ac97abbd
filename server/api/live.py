"""A task page's live updates: its snapshots, pushed or polled (admin token).

    GET /admin/v1/tasks/{task}/stream     server-sent events: ``event: snapshot`` with the
                                          current snapshot at once, then each new one
                                          (at most one a second), ``: keepalive``
                                          comments every 15 s while nothing changes
    GET /admin/v1/tasks/{task}/snapshot   the current snapshot; ``If-None-Match`` with
                                          its ETag gets a 304 (the fallback where a
                                          proxy blocks streams)

A snapshot is the ``/live`` document of the newest versions and the last three minutes
of the timeline, the same bytes for every page (:mod:`server.monitor.snapshots`). The
stream needs the ``Authorization`` header like every admin call: the page reads it with
``fetch()``, never ``EventSource`` (which cannot send headers, and a token in the URL
would end up in logs and history).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from server.api.admin import require_admin, status_of
from server.errors import Unavailable
from server.monitor.live import summary_doc
from server.monitor.snapshots import LiveHub, Summarize
from server.services import Services
from server.tasks.manager import TaskRuntime

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/v1/tasks/{task}/stream", stream),
        web.get("/admin/v1/tasks/{task}/snapshot", snapshot),
    ]


def summarizer(services: Services) -> Summarize:
    """How the hub reads a task's summary: its status, as ``/live`` shows it."""

    async def summarize(runtime: TaskRuntime) -> dict[str, Any]:
        assert services.monitor is not None
        return summary_doc(await status_of(services, runtime), services.monitor)

    return summarize


def _hub(request: web.Request) -> LiveHub:
    services = require_admin(request)
    if services.live is None:
        raise Unavailable("the monitor is not running yet", code="starting")
    return services.live


async def stream(request: web.Request) -> web.StreamResponse:
    hub = _hub(request)
    task_id = request.match_info["task"]
    async with hub.subscribe(task_id) as subscription:  # NotFound before any byte
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        while (frame := await subscription.next()) is not None:
            transport = request.transport
            if transport is None or transport.is_closing():
                break  # the page went away
            started = time.thread_time()
            try:
                await response.write(frame)
            except ConnectionError:  # the page went away mid-write
                break
            finally:
                hub.sent(time.thread_time() - started)
    return response


async def snapshot(request: web.Request) -> web.Response:
    hub = _hub(request)
    found = await hub.poll(request.match_info["task"])
    headers = {"ETag": found.etag, "Cache-Control": "no-cache"}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, content_type="application/json", headers=headers)
