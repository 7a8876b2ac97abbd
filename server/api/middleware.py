"""Middlewares: error mapping (one place, no internals leak) and request metrics.

Every request gets a request id (the caller's ``X-Request-Id`` when it is a short token,
else a fresh one), sent back in the ``X-Request-Id`` header. A 4xx body says what was
wrong with the request. A 5xx body says only a stable code, a public message and the
request id: the detail (a storage error's SQL, a Redis error's text, a traceback) goes to
the log line, which carries the same request id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from client_sdk.errors import WireFormatError
from server.api.http import CLIENT_CLOSED, CLOSE, respond
from server.errors import CODES, AsyncflError, DatabaseBusy, RateLimited, Unavailable
from server.metrics import Metrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = "X-Request-Id"
_RID = web.RequestKey("request_id", str)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


# A fresh id is 32 hex digits like a uuid4's: this process's random 64-bit prefix (drawn
# again in a forked child) and a counter. Unique across processes and restarts but for a
# 64-bit collision, and ~10x cheaper than uuid4, which reads the OS's random source for
# each request. It names a request in the logs; it is no secret.
class _RequestIds:
    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.reseed)


def request_id(request: web.BaseRequest) -> str:
    """This request's id (assigned on first use)."""
    rid = request.get(_RID)
    if rid is None:
        given = request.headers.get(REQUEST_ID, "")
        rid = given if _REQUEST_ID.fullmatch(given) else _ids.new()
        request[_RID] = rid
    return rid


def server_error_body(code: str, status: int, rid: str) -> dict[str, Any]:
    """The whole of what a 5xx answer says: the code's public text from the error table
    (:data:`server.errors.CODES`), or the generic one of its status."""
    spec = CODES.get(code)
    if spec is None or spec.status != status or not spec.public:
        spec = GENERIC_5XX.get(status, CODES["internal_error"])
    return {"error": {"code": code, "message": spec.public, "request_id": rid}}


GENERIC_5XX = {500: CODES["internal_error"], 503: CODES["unavailable"]}


def error_middleware() -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request)
        try:
            response = await handler(request)
        except AsyncflError as exc:
            response = _domain_error(request, exc, rid)
        except WireFormatError as exc:
            body = {"error": {"code": "malformed_body", "message": str(exc)}}
            response = respond(request, body, status=400)
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers[REQUEST_ID] = rid
                raise
            code = HTTP_CODES.get(exc.status, "http_error")
            body = {"error": {"code": code, "message": exc.reason}}
            if exc.status >= 500:
                body = server_error_body(code, exc.status, rid)
            response = respond(request, body, status=exc.status, headers=_keep_headers(exc))
        except Exception:
            logger.exception(
                "unhandled error in %s %s [request %s]", request.method, request.path, rid
            )
            body = server_error_body("internal_error", 500, rid)
            response = respond(request, body, status=500)
        if not response.prepared:
            response.headers[REQUEST_ID] = rid
            if request.get(CLOSE) or _unread_encoded_body(request):
                response.force_close()
        return response

    return middleware


def _unread_encoded_body(request: web.Request) -> bool:
    """A compressed body the handler did not read: aiohttp would drain (and decode) it
    after the answer to keep the connection, and log a decoding error as unhandled.
    Closing the connection instead is cheap: compressed bodies are rare."""
    return "Content-Encoding" in request.headers and not request.content.is_eof()


def _domain_error(request: web.Request, exc: AsyncflError, rid: str) -> web.Response:
    headers = {}
    if isinstance(exc, RateLimited | Unavailable | DatabaseBusy):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    where = f"{request.method} {request.path}"
    if exc.status >= 500:
        level = logging.WARNING if exc.status == 503 else logging.ERROR
        logger.log(level, "%s -> %d %s [request %s]: %s", where, exc.status, exc.code, rid, exc)
        body = server_error_body(exc.code, exc.status, rid)
        return respond(request, body, status=exc.status, headers=headers)
    if exc.status == CLIENT_CLOSED:
        logger.info("%s: the client went away mid-body [request %s]", where, rid)
    else:
        logger.debug("%s -> %d %s", where, exc.status, exc.code)
    return respond(request, exc.to_body(), status=exc.status, headers=headers)


def _keep_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def metrics_middleware(metrics: Metrics) -> web.middleware:  # type: ignore[valid-type]
    # A metric's children by (method, route, status), looked up once each: labels() cost
    # ~5 us a request. Methods outside the standard ones count as "other": the HTTP
    # parser takes ~30 (PROPFIND, PURGE, ...), and each would be a series of its own.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def child(method: str, name: str, status: int) -> tuple[Any, Any]:
        key = (method if method in KNOWN_METHODS else "other", name, status)
        found = children.get(key)
        if found is None:
            found = children[key] = (
                metrics.requests.labels(key[0], name, str(status)),
                metrics.request_seconds.labels(name),
            )
        return found

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # below 400: a redirect the error middleware let by
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            count, seconds = child(request.method, name, status)
            count.inc()
            seconds.observe(time.perf_counter() - started)

    return middleware
