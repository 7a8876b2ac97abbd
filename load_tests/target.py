"""The server under load: an embedded ``asyncfl serve`` child or an existing URL, and the
few admin and device calls the load tools make before any timing starts."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from client_sdk.errors import WireFormatError
from client_sdk.wire import CONTENT_TYPE, pack, unpack
from load_tests.bundle import BundleParts
from server.process import ServerProcess

MSGPACK_HEADERS = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}


def log(message: str) -> None:
    """Progress goes to stderr: stdout's last line is the result JSON."""
    print(message, file=sys.stderr, flush=True)


def start_server(
    data_dir: Path, env: Mapping[str, str] | None = None, *, timeout_s: float = 120.0
) -> ServerProcess:
    """Start the embedded default (SQLite, local log, fsync policy from ``env``)."""
    server = ServerProcess(data_dir, env=dict(env or {}))
    server.start(timeout_s)
    log(f"server pid {server.pid} on {server.url} (data in {data_dir})")
    return server


class AdminApi:
    """Admin calls in MessagePack, so a bundle's bytes travel as msgpack bin."""

    def __init__(self, base_url: str, admin_token: str) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {**MSGPACK_HEADERS, "Authorization": f"Bearer {admin_token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=600)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(
                method,
                self.base + path,
                data=None if body is None else pack(body),
                headers=self.headers,
            ) as resp,
        ):
            data = await resp.read()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {_error(data)}")
            return unpack(data) if resp.content_type == CONTENT_TYPE else json.loads(data)

    async def create_task(
        self, task_id: str, bundle: BundleParts, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"id": task_id, "bundle": bundle.upload_body(), "config": dict(config)}
        status: dict[str, Any] = await self.call("POST", "/admin/v1/tasks", body)
        return status

    async def status(self, task_id: str) -> dict[str, Any]:
        status: dict[str, Any] = await self.call("GET", f"/admin/v1/tasks/{task_id}")
        return status

    async def quiescent(self, task_id: str, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait until every accepted update is folded and no version is being committed."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while True:
            status = await self.status(task_id)
            buffered = status["updates_buffered"]
            settled = (
                status["updates_accepted"] == status["updates_applied"] + buffered
                and buffered < status["aggregation_goal"]  # so no version is waiting
            )
            if settled and last is not None and last["version"] == status["version"]:
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {task_id} still busy after {timeout_s:.0f} s: {status}")
            last = status if settled else None
            await asyncio.sleep(0.5)


def _error(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        try:
            doc = unpack(data)
        except WireFormatError:
            return data[:200].decode(errors="replace")
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)


TIERS = ("low", "mid", "high")  # the load fleet's device tiers, in turn


async def enroll(
    http: aiohttp.ClientSession, base: str, enrollment_key: str, tier: str = ""
) -> str:
    """Enroll one device; returns its bearer token."""
    info = {"kind": "load", **({"tier": tier} if tier else {})}
    body = pack({"enrollment_key": enrollment_key, "device_info": info})
    async with http.post(f"{base}/v1/devices/enroll", data=body, headers=MSGPACK_HEADERS) as resp:
        data = await resp.read()
        if resp.status != 201:
            raise RuntimeError(f"enroll: HTTP {resp.status}: {_error(data)}")
        return str(unpack(data)["device_token"])


async def issue_sessions(
    base: str, task_id: str, tokens: list[str], count: int, *, concurrency: int = 32
) -> list[tuple[str, int]]:
    """Check in ``count`` times (round-robin over device ``tokens``); return the sessions
    with the version each is for.

    Every upload the benchmark times needs its own session: a replayed session is
    acknowledged as a duplicate without any work, which would flatter the result.
    """
    sessions: list[tuple[str, int]] = []
    url = f"{base}/v1/tasks/{task_id}/checkin"
    body = pack({"sdk_version": "load"})
    counter = iter(range(count))

    async def worker(http: aiohttp.ClientSession) -> None:
        for i in counter:
            headers = {**MSGPACK_HEADERS, "Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            async with http.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"checkin: HTTP {resp.status}: {_error(data)}")
                answer = unpack(data)
            if not answer.get("admitted"):
                raise RuntimeError(f"checkin turned away ({answer.get('reason')}): raise C")
            sessions.append((str(answer["session"]), int(answer["version"])))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return sessions


async def enroll_many(base: str, enrollment_key: str, count: int) -> list[str]:
    async with aiohttp.ClientSession() as http:
        return [await enroll(http, base, enrollment_key) for _ in range(count)]


async def enroll_fleet(
    base: str, enrollment_key: str, count: int, *, concurrency: int = 16
) -> list[str]:
    """Enroll ``count`` devices with ``concurrency`` requests in flight; their tokens."""
    tokens: list[str] = []
    todo = iter(range(count))

    async def worker(http: aiohttp.ClientSession) -> None:
        for i in todo:
            tokens.append(await enroll(http, base, enrollment_key, TIERS[i % len(TIERS)]))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return tokens
