"""Body reading, decoding and content negotiation shared by every handler, and the one
strict parser of integers in paths and query strings.

Device endpoints speak MessagePack; admin endpoints accept JSON or MessagePack; every
answer is in the format the client asked for (``Accept``), else the one it sent.

Every decoder here turns any input into a value or an :class:`~server.errors.AsyncflError`
with a 4xx status (property-tested in ``tests/server/test_decoders.py``): a decoded body
is checked by :func:`client_sdk.wire.check_tree` whatever its format, so a handler never
meets bin map keys, 1,000-deep lists or integers beyond 64 bits.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from client_sdk.errors import WireFormatError
from client_sdk.wire import CONTENT_TYPE as MSGPACK
from client_sdk.wire import INT64_MAX, check_tree, pack, unpack
from server.errors import BadRequest, PayloadTooLarge

JSON = "application/json"
# What aiohttp decodes for us (the limit applies to the decoded bytes); any other
# Content-Encoding would hand the handler bytes it cannot read.
CONTENT_ENCODINGS = frozenset({"", "identity", "gzip", "deflate", "br"})
# nginx's code for "the client closed the connection before the answer": the answer
# reaches nobody, but /metrics and the log tell it apart from a server error.
CLIENT_CLOSED = 499
CLOSE = web.RequestKey("close_connection", bool)  # set: answer with Connection: close
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: "²".isdigit() is True


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the whole body with one copy: the chunks aiohttp received, joined once.

    ``request.read()`` grows a bytearray chunk by chunk and copies it again into bytes;
    filling a preallocated ``bytearray(n)`` costs a zero-fill of ``n`` bytes first.
    Keeping the chunks and joining them once does neither. Bodies whose Content-Length
    is above ``limit`` are refused before they are read; others as soon as they pass it
    (counted after decompression, so a small gzip bomb is refused too).
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in CONTENT_ENCODINGS:
        raise BadRequest(
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate, br or none)",
            code="unsupported_content_encoding",
        )
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes is above the {limit}-byte limit")
    content = request.content
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await content.readany()
        except ConnectionError as exc:
            raise BadRequest(
                "the client closed the connection mid-body",
                code="client_disconnected",
            ) from exc
        except web.RequestPayloadError as exc:  # a broken gzip stream or chunk framing
            request[CLOSE] = True  # the rest cannot be decoded: answer with Connection: close
            raise BadRequest(
                f"body cannot be decoded: {exc.__cause__ or exc}", code="bad_content_encoding"
            ) from exc
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is above the {limit}-byte limit")
    if length is not None and size != length and encoding in ("", "identity"):
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
    return decode_body(await read_body(request, limit), request.content_type, allow_json)


def decode_body(body: bytes, content_type: str, allow_json: bool = True) -> Any:
    """The pure half of :func:`parse_body`: bytes and their content type to a value."""
    if not body:
        return {}
    if content_type == JSON and allow_json:
        return loads_json(body)
    if content_type not in (MSGPACK, "application/octet-stream", ""):
        raise BadRequest(
            f"content type must be {MSGPACK}" + (f" or {JSON}" if allow_json else ""),
            code="unsupported_media_type",
        )
    try:
        return unpack(body)
    except WireFormatError as exc:
        raise BadRequest(str(exc), code="malformed_body") from exc


def loads_json(body: bytes) -> Any:
    """Strict JSON: no NaN/Infinity tokens, and the same tree rules as msgpack."""
    try:
        obj = json.loads(body, parse_constant=_no_constant)
        check_tree(obj)
    except RecursionError as exc:  # json's C scanner recurses per level
        raise BadRequest("body is nested too deeply", code="malformed_body") from exc
    except (ValueError, WireFormatError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="malformed_body") from exc
    return obj


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def parse_int(raw: str, name: str, *, low: int = 0, high: int = INT64_MAX) -> int:
    """A path or query integer: ASCII digits only, at most 19 of them, in ``low..high``."""
    if _DIGITS.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer in {low}..{high}", code="bad_parameter")
    return int(raw)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    return default if raw is None else parse_int(raw, f"query parameter {name}", low=low, high=high)


def parse_version(raw: str, latest: int) -> int:
    """The ``{version}`` path segment: ``latest`` or a version number."""
    if raw == "latest":
        return latest
    if _DIGITS.fullmatch(raw) is None or int(raw) > INT64_MAX:
        raise BadRequest("version must be an integer or 'latest'", code="bad_version")
    return int(raw)


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
