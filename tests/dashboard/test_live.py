"""Live snapshots against a real ``asyncfl serve``: built once per change, pushed to every
open stream, no database read while nothing changes, admin token only, streams that end
cleanly when the page goes away or the server stops."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from load_tests.scrape import Sample, parse
from server.admin_client import AdminClient
from server.process import ServerProcess
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, settled, wait_for

# no timer-driven refresh during a test: every re-read must come from a change
QUIET = {"ASYNCFL_FLEET_REFRESH_S": "3600"}


class Stream:
    """A task's server-sent-event stream as a page reads it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer = b""

    async def snapshot(self, timeout_s: float = 15.0) -> tuple[bytes, dict[str, Any]]:
        """The next snapshot event (keepalives skipped): its data bytes and document."""
        while True:
            end = self._buffer.find(b"\n\n")
            if end >= 0:
                block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                data = [line[6:] for line in block.split(b"\n") if line.startswith(b"data: ")]
                if data:
                    assert b"event: snapshot" in block
                    return data[0], json.loads(data[0])
                continue
            chunk = await asyncio.wait_for(self.response.content.readany(), timeout_s)
            if not chunk:
                raise EOFError("the stream ended")
            self._buffer += chunk

    async def until(self, check: Any, timeout_s: float = 30.0) -> tuple[bytes, dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            raw, doc = await self.snapshot(timeout_s=max(0.1, left))
            if check(doc):
                return raw, doc


def _auth(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


@asynccontextmanager
async def stream(http: aiohttp.ClientSession, server: ServerProcess) -> AsyncIterator[Stream]:
    async with http.get(f"{server.url}/admin/v1/tasks/t1/stream", headers=_auth(server)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield Stream(resp)


async def metrics(http: aiohttp.ClientSession, server: ServerProcess) -> tuple[Sample, str]:
    async with http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    return parse(text), text


def _server_errors(text: str) -> list[str]:
    return re.findall(r'^asyncfl_http_requests_total\{[^}]*status="5\d\d"[^}]*\} .*$', text, re.M)


async def _read_to_the_end(page: Stream) -> None:
    while True:
        await page.snapshot(timeout_s=5.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_nothing_is_reread_or_rebuilt_while_nothing_changes(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server)
    async with stream(http, server) as first, stream(http, server) as second:
        await first.snapshot()
        await second.snapshot()
        await asyncio.sleep(2.5)  # the update rate needs two samples: None, then 0.0
        before, _ = await metrics(http, server)
        await asyncio.sleep(4.0)  # four ticks of the hub
        url = f"{server.url}/admin/v1/tasks/t1/snapshot"
        async with http.get(url, headers=_auth(server)) as resp:
            etag = resp.headers["ETag"]
        async with http.get(url, headers={**_auth(server), "If-None-Match": etag}) as resp:
            unchanged = resp.status
        after, _ = await metrics(http, server)

    assert before.streams == 2
    assert after.refreshes == before.refreshes  # no database read
    assert after.snapshots == before.snapshots  # nothing built or encoded
    assert after.frames == before.frames  # nothing written
    assert unchanged == 304


async def test_a_commit_reaches_every_open_stream_as_the_same_bytes(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server, aggregation={"aggregation_goal": 2})
    fleet = await Fleet(server).enroll(2)
    try:
        async with stream(http, server) as a, stream(http, server) as b, stream(http, server) as c:
            for page in (a, b, c):
                await page.snapshot()
            before, _ = await metrics(http, server)
            await fleet.run(rounds=1)  # two updates: version 1
            seen = [
                await page.until(lambda d: any(v["version"] == 1 for v in d["versions"]))
                for page in (a, b, c)
            ]
            after, _ = await metrics(http, server)
    finally:
        await fleet.close()

    assert all(doc["summary"]["version"] >= 1 for _, doc in seen)
    assert len({raw for raw, _ in seen}) == 1  # one snapshot, the same bytes to all
    built = after.snapshots - before.snapshots
    assert 1 <= built <= (after.frames - before.frames) / 3  # not one per stream
    assert after.refreshes > before.refreshes  # the commit was read


async def test_checkins_counted_here_show_without_a_database_read(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server, concurrency=1)
    fleet = await Fleet(server).enroll(1)
    try:
        async with stream(http, server) as page:
            _, first = await page.snapshot()
            before, _ = await metrics(http, server)
            await fleet.devices[0].client.run_once()  # checks in (admitted), no commit
            _, doc = await page.until(
                lambda d: (
                    d["timeline"]["checkins"]["admitted"]
                    > first["timeline"]["checkins"]["admitted"]
                )
            )
            after, _ = await metrics(http, server)
    finally:
        await fleet.close()

    assert doc["summary"]["version"] == 0
    assert after.refreshes == before.refreshes


async def test_a_missing_or_wrong_token_gets_no_stream_and_no_data(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server, "secret-task")
    base = f"{server.url}/admin/v1/tasks/secret-task"
    answers = []
    for path in ("/stream", "/snapshot", f"/stream?token={server.admin_token}"):
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            async with http.get(base + path, headers=headers) as resp:
                answers.append((resp.status, resp.content_type, await resp.text()))

    assert {status for status, _, _ in answers} == {401}
    assert all(kind == "application/json" for _, kind, _ in answers)
    assert all("secret-task" not in body and "summary" not in body for _, _, body in answers)


async def test_a_page_that_goes_away_ends_its_stream_cleanly(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server)
    async with stream(http, server) as page:
        await page.snapshot()
        page.response.connection.transport.abort()  # type: ignore[union-attr]  # tab closed
    async with AdminClient(server.url, server.admin_token) as admin:
        await admin.request("POST", "/admin/v1/tasks/t1/pause")  # a change to push
    for _ in range(50):
        sample, text = await metrics(http, server)
        if sample.streams == 0:
            break
        await asyncio.sleep(0.1)
    log = server.log_file.read_text()

    assert sample.streams == 0
    assert _server_errors(text) == []
    assert " ERROR " not in log and "Traceback" not in log


async def test_open_streams_end_when_the_server_stops(
    start_server: ServerProcessFactory, http: aiohttp.ClientSession
) -> None:
    server = start_server(env=QUIET)
    await create_task(server)
    fleet = await Fleet(server).enroll(2)
    await fleet.run(rounds=1)
    await fleet.close()
    await wait_for(server, settled(2, 2))
    async with stream(http, server) as page:
        await page.snapshot()
        loop = asyncio.get_running_loop()
        started = loop.time()
        code = await asyncio.to_thread(server.stop)
        with pytest.raises((EOFError, aiohttp.ClientError)):
            await _read_to_the_end(page)
        took = loop.time() - started
    log = server.log_file.read_text()

    assert code == 0
    assert took < 10.0  # not the 30-s shutdown timeout
    assert " ERROR " not in log and "Traceback" not in log
