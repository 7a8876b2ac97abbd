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


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole body with one copy: the chunks aiohttp received, joined once.

    ``request.read()`` grows a bytearray chunk by chunk and copies it again into bytes;
    filling a preallocated ``bytearray(n)`` costs a zero-fill of ``n`` bytes first.
    Keeping the chunks and joining them once does neither. Bodies whose Content-Length
    is above ``limit`` are refused before they are read; others as soon as they pass it.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes is above the {limit}-byte limit")
    content = request.content
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is above the {limit}-byte limit")
    if length is not None and size != length:
        raise BadRequest(
            f"body has {size} bytes, its Content-Length says {length}", code="malformed_body"
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
