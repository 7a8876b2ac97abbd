"""The error middleware: 5xx answers carry a code and a request id, never internals."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.api.middleware import error_middleware, metrics_middleware
from server.errors import BadRequest, DatabaseBusy, StorageError, Unavailable
from server.metrics import Metrics

SQL = "INSERT INTO updates (id, base_version) VALUES ('x', 18446744073709551616)"


async def _storage(request: web.Request) -> web.Response:
    raise StorageError(f"ledger write failed: (sqlite3.IntegrityError) {SQL}")


async def _redis(request: web.Request) -> web.Response:
    raise Unavailable(
        "sessions: redis unavailable (Error 111 connecting to 10.0.0.7:6379)",
        code="redis_unavailable",
    )


async def _busy(request: web.Request) -> web.Response:
    raise DatabaseBusy("cannot enroll device: QueuePool limit of size 5 overflow 10 reached")


async def _bug(request: web.Request) -> web.Response:
    raise KeyError("secret-key-name")


async def _refused(request: web.Request) -> web.Response:
    raise BadRequest("num_examples must be in 1..10", code="bad_num_examples")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application(middlewares=[metrics_middleware(Metrics()), error_middleware()])
    app.router.add_get("/storage", _storage)
    app.router.add_get("/redis", _redis)
    app.router.add_get("/bug", _bug)
    app.router.add_get("/busy", _busy)
    app.router.add_get("/refused", _refused)
    async with TestServer(app) as test_server:
        yield test_server


@pytest.mark.parametrize(
    ("path", "status", "code", "secret"),
    [
        ("/storage", 500, "storage_error", "INSERT INTO"),
        ("/redis", 503, "redis_unavailable", "10.0.0.7"),
        ("/bug", 500, "internal_error", "secret-key-name"),
        ("/busy", 503, "database_busy", "QueuePool"),
    ],
)
async def test_server_errors_say_a_code_and_a_request_id_and_log_the_detail(
    server: TestServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    code: str,
    secret: str,
) -> None:
    caplog.set_level(logging.INFO, logger="server.api.middleware")
    async with aiohttp.ClientSession() as http, http.get(server.make_url(path)) as r:
        text = await r.text()
        doc = await r.json()
        rid = r.headers["X-Request-Id"]

    assert r.status == status
    assert (r.headers.get("Retry-After") is not None) == (status == 503)
    assert doc["error"]["code"] == code and doc["error"]["request_id"] == rid
    assert secret not in text and "Traceback" not in text
    logged = [rec for rec in caplog.records if rid in rec.getMessage()]
    assert logged and secret in (logged[0].getMessage() + str(logged[0].exc_info))


async def test_client_errors_keep_their_message(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/refused")) as r:
        doc = await r.json()
    assert r.status == 400
    assert doc["error"] == {"code": "bad_num_examples", "message": "num_examples must be in 1..10"}
