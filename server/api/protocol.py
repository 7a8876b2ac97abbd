"""The project's error shape for requests aiohttp's HTTP parser refuses.

A request aiohttp cannot parse (a bad chunk size, two Content-Lengths, a header line
above 8,190 bytes, a method that is not a token) never reaches the application or its
middlewares: aiohttp answers it from ``RequestHandler.handle_error`` with a plain-text
400 and logs a traceback at ERROR. aiohttp offers no public hook for that answer
(aio-libs/aiohttp#3287), so :class:`AppRunner` swaps in a request handler whose
``handle_error`` answers ``{"error": {"code": "malformed_http", ...}}`` (JSON, with an
``X-Request-Id``) and logs one line at INFO. ``tests/server/test_hostile_input.py``
pins this, so an aiohttp upgrade that moves the hook fails a test rather than silently
going back to plain text.

What this cannot change: aiohttp still closes the connection after such an answer, a
request that fails before its request line is complete may be answered as HTTP/1.0,
and input that is not HTTP at all (TLS on the plain port) gets the same 400.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from server.api.middleware import REQUEST_ID, server_error_body

logger = logging.getLogger(__name__)

MAX_MESSAGE = 200


class ShapedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol, answering parse errors in the error shape."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response is half sent already
            raise ConnectionError("response already started; cannot send the error")
        rid = uuid.uuid4().hex
        if status >= 500:
            logger.error("request failed outside the app [request %s]", rid, exc_info=exc)
            body = server_error_body("internal_error", status, rid)
        else:
            text = (message or getattr(exc, "message", "") or "malformed request").strip()
            first = text.splitlines()[0].rstrip(":")[:MAX_MESSAGE]
            logger.info("malformed HTTP from %s -> %d: %s", request.remote, status, first)
            body = {"error": {"code": "malformed_http", "message": first, "request_id": rid}}
        response = web.Response(
            status=status,
            text=json.dumps(body),
            content_type="application/json",
            headers={REQUEST_ID: rid},
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A body that fails to decode while aiohttp drains it after the answer (the
        handler did not read it; the answer said Connection: close) is the client's
        fault: one INFO line, not an ERROR with a traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            reason = " ".join(str(exc).split())
            logger.info("dropped an unread request body that does not decode: %s", reason)
            return
        super().log_exception(*args, **kw)


class _ShapedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ShapedRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parse errors in the error shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ShapedServer  # the same object; only its protocol factory differs
        return server
