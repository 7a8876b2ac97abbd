"""Body reading and content negotiation shared by every handler.

Device endpoints speak MessagePack; admin endpoints accept JSON or MessagePack; every
answer is in the format the client asked for (``Accept``), else the one it sent.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from client_sdk.errors import WireFormatError
from client_sdk.wire import CONTENT_TYPE as MSGPACK
from client_sdk.wire import pack, unpack
from server.errors import BadRequest, PayloadTooLarge

JSON = "application/json"


async def read_body(request: web.Request, limit: int) -> bytearray:
    """Read the whole body into one preallocated buffer (one copy, not three).

    ``request.read()`` joins chunks into a new bytes and callers copy again; reading
    ``request.content`` chunks straight into a buffer sized from Content-Length avoids
    both. Bodies above ``limit`` are refused before they are read.
    """
    length = request.content_length
    if length is not None:
        if length > limit:
            raise PayloadTooLarge(f"body of {length} bytes is above the {limit}-byte limit")
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        while pos < length:
            chunk = await request.content.readany()
            if not chunk:
                break
            end = pos + len(chunk)
            if end > length:
                raise BadRequest("body is longer than its Content-Length", code="malformed_body")
            view[pos:end] = chunk
            pos = end
        if pos != length:
            raise BadRequest("body is shorter than its Content-Length", code="malformed_body")
        return buf
    out = bytearray()
    async for chunk in request.content.iter_any():
        out += chunk
        if len(out) > limit:
            raise PayloadTooLarge(f"body is above the {limit}-byte limit")
    return out


def wants_msgpack(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if MSGPACK in accept:
        return True
    if JSON in accept:
        return False
    return request.content_type == MSGPACK


async def parse_body(request: web.Request, limit: int, *, allow_json: bool = True) -> Any:
    """Decode a msgpack (or, where allowed, JSON) body; empty bodies decode to ``{}``."""
    body = await read_body(request, limit)
    if not body:
        return {}
    if request.content_type == JSON and allow_json:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}", code="malformed_body") from exc
    if request.content_type not in (MSGPACK, "application/octet-stream", ""):
        raise BadRequest(
            f"content type must be {MSGPACK}" + (f" or {JSON}" if allow_json else ""),
            code="unsupported_media_type",
            status=415,
        )
    try:
        return unpack(body)
    except WireFormatError as exc:
        raise BadRequest(str(exc), code="malformed_body") from exc


def respond(
    request: web.Request,
    obj: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    msgpack_default: bool = False,
) -> web.Response:
    use_msgpack = wants_msgpack(request) or (
        msgpack_default and JSON not in request.headers.get("Accept", "")
    )
    if use_msgpack:
        return web.Response(body=pack(obj), status=status, content_type=MSGPACK, headers=headers)
    return web.Response(
        text=json.dumps(obj, separators=(",", ":"), default=_json_default),
        status=status,
        content_type=JSON,
        headers=headers,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    raise TypeError(f"cannot serialise {type(value).__name__}")
