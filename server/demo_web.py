"""The web demo's page server: the demo page, the web SDK, onnxruntime-web, and ``/v1``.

Browsers train against ``asyncfl serve`` through this one origin, so the page needs no
CORS and the server needs no change: ``/v1/*`` is relayed to the server as is (every
relayed request is counted by kind, which the tests and benchmarks read from
``/demo-api/requests``). Beside it:

- ``/`` and ``/demo/*``: the page (``client_sdk/web/demo``);
- ``/sdk/*``: the SDK's browser build (``client_sdk/web/dist/browser``);
- ``/ort/*``: onnxruntime-web's WASM build (from ``client_sdk/web/node_modules``);
- ``/demo-api/config``, ``/demo-api/shard/{i}``: the task and each device's local data;
- ``/demo-api/status``: the task's progress (the admin token stays on this side);
- ``/demo-api/job/{name}``: step jobs for ``/demo/bench.html`` (parity and timing runs
  of a bundle's train-step graph in the browser, used by tests and benchmarks).

``asyncfl demo --web`` (see :mod:`server.demo_web_run`) starts it next to a server.
"""

from __future__ import annotations

import logging
import mimetypes
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from client_sdk.wire import encode_tensor, pack
from server.admin_client import AdminClient

logger = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent.parent / "client_sdk" / "web"
PAGE_DIR = WEB / "demo"
SDK_DIR = WEB / "dist" / "browser"
ORT_DIR = WEB / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = frozenset(
    {"ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"}
)
# request headers relayed to the server, and answer headers relayed back
FORWARD = ("Authorization", "Content-Type", "Accept", "If-None-Match")
BACKWARD = ("Content-Type", "ETag", "Cache-Control", "Retry-After")
NO_STORE = {"Cache-Control": "no-store"}

mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")


@dataclass(frozen=True)
class DemoTask:
    """What the page needs to know: the task, the enrollment key and the local data."""

    task: str
    enrollment_key: str
    shards: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]
    target: float = 0.90


def missing_assets() -> list[str]:
    """Files the page needs that are not there (run ``bash .ci/install-browser`` and
    ``npm run build`` in client_sdk/web)."""
    wanted = [PAGE_DIR / "index.html", SDK_DIR / "worker.js", SDK_DIR / "asyncfl-web.js"]
    wanted += [ORT_DIR / name for name in sorted(ORT_FILES)]
    return [str(p) for p in wanted if not p.is_file()]


def request_kind(path: str) -> str:
    """``enroll``, ``checkin``, ``artifact``, ``params``, ``update``, ``evaluation``,
    ``release`` or ``other``: what a relayed ``/v1`` request was for."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["v1", "artifacts"]:
        return "artifact"
    if parts[:3] == ["v1", "devices", "enroll"]:
        return "enroll"
    if len(parts) >= 4 and parts[:2] == ["v1", "tasks"]:
        tail = parts[3:]
        kinds = {
            ("checkin",): "checkin",
            ("updates",): "update",
            ("evaluations",): "evaluation",
            ("sessions", "release"): "release",
        }
        if tuple(tail) in kinds:
            return kinds[tuple(tail)]
        if tail and tail[0] == "versions" and tail[-1] == "params":
            return "params"
    return "other"


class WebDemo:
    """The aiohttp application described in the module docstring."""

    def __init__(
        self,
        upstream: str,
        admin_token: str,
        demo: DemoTask,
        *,
        jobs: dict[str, bytes] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.admin_token = admin_token
        self.demo = demo
        self.jobs = dict(jobs or {})  # name -> msgpack job for the bench page (parity, timing)
        self.requests: Counter[str] = Counter()  # kind -> relayed requests
        self.body_bytes: Counter[str] = Counter()  # kind -> answer body bytes relayed
        self.sent_bytes: Counter[str] = Counter()  # kind -> request body bytes relayed
        self._client: aiohttp.ClientSession | None = None
        self._admin: AdminClient | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/", self.index),
                web.get("/demo/{name}", self.page_file),
                web.get("/sdk/{name}", self.sdk_file),
                web.get("/ort/{name}", self.ort_file),
                web.get("/demo-api/config", self.config),
                web.get("/demo-api/shard/{index}", self.shard),
                web.get("/demo-api/status", self.status),
                web.get("/demo-api/requests", self.counts),
                web.get("/demo-api/job/{name}", self.job),
                web.route("*", "/v1/{tail:.*}", self.relay),
            ]
        )
        app.cleanup_ctx.append(self._clients)
        return app

    async def _clients(self, app: web.Application) -> Any:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), auto_decompress=False
        )
        async with AdminClient(self.upstream, self.admin_token) as admin:
            self._admin = admin
            yield
        await self._client.close()

    # -- static files ---------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return _file(PAGE_DIR, "index.html")

    async def page_file(self, request: web.Request) -> web.StreamResponse:
        return _file(PAGE_DIR, request.match_info["name"])

    async def sdk_file(self, request: web.Request) -> web.StreamResponse:
        return _file(SDK_DIR, request.match_info["name"])

    async def ort_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ORT_FILES:
            raise web.HTTPNotFound()
        return _file(ORT_DIR, name)

    # -- the demo's own API -----------------------------------------------------------
    async def config(self, request: web.Request) -> web.Response:
        body = {
            "task": self.demo.task,
            "enrollmentKey": self.demo.enrollment_key,
            "devices": len(self.demo.shards),
            "target": self.demo.target,
        }
        return web.json_response(body, headers=NO_STORE)

    async def shard(self, request: web.Request) -> web.Response:
        raw = request.match_info["index"]
        if not raw.isdigit() or int(raw) >= len(self.demo.shards):
            raise web.HTTPNotFound(text=f"no shard {raw}; there are {len(self.demo.shards)}")
        x, y = self.demo.shards[int(raw)]
        body = pack({"x": encode_tensor(np.ascontiguousarray(x)), "y": encode_tensor(y)})
        return web.Response(body=body, content_type="application/msgpack", headers=NO_STORE)

    async def status(self, request: web.Request) -> web.Response:
        assert self._admin is not None
        task = request.query.get("task", self.demo.task)
        status = await self._admin.status(task)
        last_eval = status.get("last_eval") or {}
        body = {
            "task": task,
            "version": status["version"],
            "accuracy": last_eval.get("accuracy"),
            "updates_applied": status["updates_applied"],
            "updates_accepted": status["updates_accepted"],
            "active_sessions": status["active_sessions"],
        }
        return web.json_response(body, headers=NO_STORE)

    async def counts(self, request: web.Request) -> web.Response:
        body = {
            "requests": dict(self.requests),
            "body_bytes": dict(self.body_bytes),
            "sent_bytes": dict(self.sent_bytes),
        }
        return web.json_response(body, headers=NO_STORE)

    async def job(self, request: web.Request) -> web.Response:
        body = self.jobs.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="application/msgpack", headers=NO_STORE)

    # -- the relay --------------------------------------------------------------------
    async def relay(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        kind = request_kind(request.path)
        self.requests[kind] += 1
        headers = {k: v for k in FORWARD if (v := request.headers.get(k)) is not None}
        body = await request.read()
        self.sent_bytes[kind] += len(body)
        try:
            async with self._client.request(
                request.method,
                self.upstream + request.path_qs,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                back = {k: v for k in BACKWARD if (v := answer.headers.get(k)) is not None}
                status = answer.status
        except aiohttp.ClientError as exc:
            logger.warning("relay %s %s failed: %s", request.method, request.path, exc)
            error = {"error": {"code": "upstream_unavailable", "message": "server unreachable"}}
            return web.json_response(error, status=502, headers={"Retry-After": "2"})
        self.body_bytes[kind] += len(data)
        return web.Response(status=status, body=data, headers=back)


def _file(root: Path, name: str) -> web.StreamResponse:
    path = (root / name).resolve()
    if path.parent != root.resolve() or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers=NO_STORE)
