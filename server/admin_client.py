"""A small async client for the admin API (demo, tests, load tools, operators' scripts)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from client_sdk.errors import ServerError


class AdminClient:
    def __init__(self, base_url: str, admin_token: str, *, timeout_s: float = 600.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None, "use AdminClient as an async context manager"
        async with self._session.request(method, self._base + path, json=body) as resp:
            data = await resp.read()
            if resp.status >= 400:
                try:
                    err = json.loads(data)["error"]
                    code, message = err["code"], err["message"]
                except (ValueError, KeyError, TypeError):
                    code, message = "http_error", data[:200].decode(errors="replace")
                raise ServerError(resp.status, code, message)
            if resp.content_type == "application/json":
                return json.loads(data)
            return data

    async def create_task(self, task_id: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", "/admin/v1/tasks", {"id": task_id, **fields}
        )
        return result

    async def status(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/admin/v1/tasks/{task_id}")
        return result

    async def versions(self, task_id: str, limit: int = 100) -> list[dict[str, Any]]:
        result = await self.request("GET", f"/admin/v1/tasks/{task_id}/versions?limit={limit}")
        return list(result["versions"])
