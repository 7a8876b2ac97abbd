"""Middlewares: error mapping (one place, no internals leak) and request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from client_sdk.errors import WireFormatError
from server.api.http import respond
from server.errors import AsyncflError, RateLimited, Unavailable
from server.metrics import Metrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


def error_middleware() -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AsyncflError as exc:
            if exc.status >= 500:
                logger.error("%s %s: %s", request.method, request.path, exc.message)
            else:
                logger.debug("%s %s -> %d %s", request.method, request.path, exc.status, exc.code)
            headers = {}
            if isinstance(exc, RateLimited | Unavailable):
                headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            return respond(request, exc.to_body(), status=exc.status, headers=headers)
        except WireFormatError as exc:
            body = {"error": {"code": "malformed_body", "message": str(exc)}}
            return respond(request, body, status=400)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = HTTP_CODES.get(exc.status, "http_error")
            body = {"error": {"code": code, "message": exc.reason}}
            return respond(request, body, status=exc.status, headers=_keep_headers(exc))
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, request.path)
            body = {"error": {"code": "internal_error", "message": "internal server error"}}
            return respond(request, body, status=500)

    return middleware


def _keep_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}


def metrics_middleware(metrics: Metrics) -> web.middleware:  # type: ignore[valid-type]
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
        finally:
            metrics.requests.labels(request.method, name, str(status)).inc()
            metrics.request_seconds.labels(name).observe(time.perf_counter() - started)

    return middleware
