"""The embedded app in process: an upload waiting for durability holds none of its
bytes; the heap's figures and trim; a task loaded twice at once keeps one runtime.

Under a slow group commit (a busy disk, a starved CPU) every upload in the open group
waits; if each kept its body, a 10,000-device soak at 400 KB an upload grew the
server's heap by ~1 GB while commits lagged. Here a real embedded app (SQLite, the
checkpoint log) cuts its group after 1 s, and the body of an upload folded in it
must be gone while its acknowledgement still waits.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from client_sdk import wire
from client_sdk.api import ServerApi
from client_sdk.transport import AiohttpTransport
from server.admin_client import AdminClient
from server.app import create_app
from server.heap import heap_bytes, trim
from server.services import SERVICES
from server.settings import Settings
from tests.server.fleet import SMALL_TASK

GROUP_S = 1.0


class Body(bytearray):
    """An upload body that can be watched: a bytearray accepts weak references."""


@pytest.fixture
async def server(tmp_path: Path, exports_dir: Path) -> AsyncIterator[TestServer]:
    settings = Settings(
        data_dir=tmp_path,
        exports_dir=exports_dir,
        group_commit_ms=GROUP_S * 1000,
        admin_token="admin-" + "a" * 32,
        enrollment_key="enroll-" + "e" * 32,
        secret_key="secret-" + "s" * 32,
    )
    async with TestServer(create_app(settings), host="127.0.0.1") as test_server:
        yield test_server


async def test_a_folded_upload_waits_for_its_group_without_its_body(server: TestServer) -> None:
    url = str(server.make_url("")).rstrip("/")
    settings: Settings = server.app[SERVICES].settings
    async with AdminClient(url, settings.admin_token) as admin:
        await admin.create_task("t1", model="logreg", config=SMALL_TASK)
    transport = AiohttpTransport(url)
    api = ServerApi(transport)
    try:
        _, token = await api.enroll(settings.enrollment_key, {})
        checkin = await api.checkin("t1", token, {})
        assert checkin.admitted
        fetched = await api.fetch(checkin.params_url, token)
        assert fetched.body is not None
        params = wire.decode_tensors(wire.unpack(fetched.body), where="params")
        delta = [np.full(p.shape, 0.01, np.float32) for p in params]
        body = Body(api.encode_update(checkin.session, checkin.version, 16, delta, {}))
        watched = weakref.ref(body)
        ingest = server.app[SERVICES].ingest
        upload = asyncio.ensure_future(ingest.upload("t1", body))
        del body
        await asyncio.sleep(GROUP_S / 3)  # folded, its group not yet cut
        gc.collect()
        held = watched() is not None
        pending = not upload.done()
        ack = await upload
    finally:
        await transport.close()

    assert pending, "the group was cut before the check: nothing was waiting"
    assert not held, "an upload waiting for durability still holds its body"
    assert ack["status"] == "accepted"
    assert ack["update_id"] == checkin.session_id


async def test_the_heap_figures_are_on_metrics_and_a_trim_hands_pages_back(
    server: TestServer,
) -> None:
    """glibc's own figures on /metrics; memory freed into the heap goes back to the
    kernel on a trim (the server runs one every ``heap_trim_s``)."""
    blocks = [bytearray(16_000) for _ in range(12_000)]  # ~190 MB from the heap, not mmap
    kept = blocks[::12]  # the rest freed: holes the heap keeps, below its top
    del blocks
    before = heap_bytes()
    rss_before = _rss_mb()
    handed_back = trim()
    rss_after = _rss_mb()
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as resp:
        text = await resp.text()
    scraped = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("asyncfl_heap_bytes{")
    }

    assert before is not None
    assert before["free"] > 150e6  # the freed blocks stayed in the heap ...
    assert handed_back
    assert rss_before - rss_after > 100  # ... until the trim handed their pages back (MiB)
    assert set(scraped) == {"in_use", "free", "mapped"}
    assert scraped["in_use"] >= len(kept) * 16_000


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_a_task_loaded_twice_at_once_keeps_one_runtime(server: TestServer) -> None:
    """A create and a state refresh can both load a new task (each awaits its blobs
    before registering it): the second must not replace the runtime the leadership
    already runs, or the task answers task_not_led for good (seen in CI)."""
    url = str(server.make_url("")).rstrip("/")
    services = server.app[SERVICES]
    async with AdminClient(url, services.settings.admin_token) as admin:
        await admin.create_task("t1", model="logreg", config=SMALL_TASK)
    manager = services.manager
    led = manager.runtimes["t1"]
    record = await manager.repo.get("t1")

    again = await asyncio.gather(manager.load(record), manager.refresh("t1"), manager.load(record))

    assert again[0] is led and again[2] is led
    assert manager.runtimes["t1"] is led and led.leading
