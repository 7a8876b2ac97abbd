"""How the SDK reaches the server: a small interface, so tests and the simulator can
plug in an in-process transport, and an aiohttp implementation for real devices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import CIMultiDict

from client_sdk.errors import TransportError


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        """Send one request; raise :class:`TransportError` when no answer came back."""
        ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """HTTP/1.1 keep-alive over one ``aiohttp.ClientSession``; counts body bytes both ways.

    ``timeout_s`` bounds a whole request, ``connect_timeout_s`` the TCP connect alone.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        limit: int = 4,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._own = session is None
        self._session = session
        self._limit = limit
        self.bytes_sent = 0
        self.bytes_received = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or self._timeout_s, sock_connect=self._connect_timeout_s
        )
        try:
            async with self._client().request(
                method, self._base + path, data=body, headers=headers, timeout=timeout
            ) as resp:
                data = await resp.read()
                self.bytes_received += len(data)
                if body is not None:
                    self.bytes_sent += len(body)
                return Response(resp.status, CIMultiDict(resp.headers), data)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None
