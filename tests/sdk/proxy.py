"""A small fault-injecting TCP proxy that speaks just enough HTTP/1.1 to count and cut.

It sits between the SDK and a real server on loopback. For every request it asks
``decide(request)`` what to do:

- ``"pass"``: forward it and relay the answer;
- ``"drop"``: close the client's connection without forwarding (a cut connection);
- ``"lose"``: forward it, let the server answer, then close the client's connection
  without relaying (the server acted, the device never heard: the idempotency case);
- a :class:`Reply`: answer locally (503/429 storms, endpoints the server lacks).

Each request goes to the server on a fresh connection (``Connection: close``); the
client side keeps its connection alive. Every exchange is recorded in ``exchanges``
with the response body size, so tests can count the bytes of each kind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from client_sdk.wire import pack


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, code: str, retry_after: float | None = None) -> Reply:
        headers = {"Content-Type": "application/msgpack"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body = pack({"error": {"code": code, "message": f"injected by the test proxy ({code})"}})
        return cls(status, body, headers)


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    fate: str  # pass | drop | lose | local | down (upstream refused)
    status: int
    body_bytes: int


Decision = str | Reply
REASONS = {200: "OK", 201: "Created", 304: "Not Modified", 429: "Too Many", 503: "Unavailable"}


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.decide: Callable[[ProxyRequest], Decision] = lambda _: "pass"
        self.rewrite: Callable[[ProxyRequest, int, bytes], bytes] | None = None
        self.after_forward: Callable[[ProxyRequest], Awaitable[None]] | None = None
        self.exchanges: list[Exchange] = []
        self.requests: list[ProxyRequest] = []
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._conns.values():
            writer.close()  # the connection's reader sees EOF and its task ends
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def bytes_for(self, prefix: str, method: str = "GET") -> int:
        """Response body bytes the client received for paths starting with ``prefix``."""
        return sum(
            e.body_bytes
            for e in self.exchanges
            if e.path.startswith(prefix) and e.method == method and e.fate == "pass"
        )

    def count(self, prefix: str, method: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if r.path.startswith(prefix) and (method is None or r.method == method)
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if not await self._handle(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, request: ProxyRequest, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False closes the client connection."""
        decision = self.decide(request)
        if decision == "drop":
            self._record(request, "drop", 0, 0)
            return False
        if isinstance(decision, Reply):
            self._record(request, "local", decision.status, len(decision.body))
            await _write_response(writer, decision.status, decision.headers, decision.body)
            return True
        try:
            status, headers, body = await self._forward(request)
        except OSError:
            self._record(request, "down", 0, 0)
            return False  # server down: the client sees a cut connection
        if self.after_forward is not None:
            await self.after_forward(request)
        if decision == "lose":
            self._record(request, "lose", status, len(body))
            return False
        if self.rewrite is not None:
            body = self.rewrite(request, status, body)
        self._record(request, "pass", status, len(body))
        await _write_response(writer, status, headers, body)
        return True

    def _record(self, request: ProxyRequest, fate: str, status: int, size: int) -> None:
        self.exchanges.append(Exchange(request.method, request.path, fate, status, size))

    async def _forward(self, request: ProxyRequest) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(self.host, self.upstream_port)
        try:
            skip = {"connection", "content-length", "keep-alive"}
            headers = {k: v for k, v in request.headers.items() if k not in skip}
            headers["connection"] = "close"
            headers["content-length"] = str(len(request.body))
            head = f"{request.method} {request.path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            writer.write(head.encode() + b"\r\n" + request.body)
            await writer.drain()
            status_line, resp_headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            status = int(status_line.split()[1])
            length = resp_headers.get("content-length")
            if length is not None:
                body = await reader.readexactly(int(length))
            elif status in (204, 304):
                body = b""
            else:
                body = await reader.read()
            return status, resp_headers, body
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("upstream closed mid-answer") from exc
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> ProxyRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, headers = _parse_head(head)
    method, path, _ = request_line.split(" ", 2)
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return ProxyRequest(method, path, headers, body)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _write_response(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes
) -> None:
    skip = {"content-length", "connection", "transfer-encoding", "keep-alive"}
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in skip]
    lines += [f"Content-Length: {len(body)}", "Connection: keep-alive"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
