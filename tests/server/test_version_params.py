"""A commit of several versions keeps the parameters of the one it publishes.

Versions superseded in the commit that made them were never handed to a device; their
rows stay (counts, ledger), their parameters are not written, and asking for them is a
clear 404 (``params_not_kept``) on both the device and the admin API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest

from client_sdk.errors import ServerError
from client_sdk.wire import encode_tensor, pack
from server.admin_client import AdminClient
from tests.conftest import ServerProcessFactory
from tests.server.fleet import create_task, wait_for

MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
DEVICES = 4


async def _post(http: aiohttp.ClientSession, url: str, body: Any, token: str = "") -> Any:
    headers = {**MSGPACK, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with http.post(url, data=pack(body), headers=headers) as r:
        assert r.status < 300, (r.status, await r.read())
        return msgpack.unpackb(await r.read())


async def test_only_the_published_version_of_a_commit_keeps_its_parameters(
    start_server: ServerProcessFactory,
) -> None:
    # one group gathers for 400 ms: four uploads at K=1 make four versions in one commit
    server = start_server(env={"ASYNCFL_GROUP_COMMIT_MS": "400"})
    await create_task(
        server,
        concurrency=100,
        aggregation={"aggregation_goal": 1, "optimizer": {"name": "fedavg", "lr": 1.0}},
    )
    async with aiohttp.ClientSession() as http:
        tokens = [
            (await _post(http, f"{server.url}/v1/devices/enroll", {"enrollment_key": k}))[
                "device_token"
            ]
            for k in [server.enrollment_key] * DEVICES
        ]
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        async with http.get(f"{server.url}/v1/tasks/t1/versions/0/params", headers=auth) as r:
            shapes = [t["shape"] for t in msgpack.unpackb(await r.read())]
        sessions = [
            (await _post(http, f"{server.url}/v1/tasks/t1/checkin", {}, t))["session"]
            for t in tokens
        ]
        bodies = [
            {
                "session": s,
                "base_version": 0,
                "num_examples": 10,
                "tensors": [encode_tensor(np.full(shape, i + 1, np.float32)) for shape in shapes],
            }
            for i, s in enumerate(sessions)
        ]
        await asyncio.gather(*(_post(http, f"{server.url}/v1/tasks/t1/updates", b) for b in bodies))
        await wait_for(server, lambda s: s["version"] == DEVICES)

        async with AdminClient(server.url, server.admin_token) as admin:
            rows = {row["version"]: row for row in await admin.versions("t1")}
            assert sorted(rows) == list(range(DEVICES + 1))
            assert [rows[v]["num_updates"] for v in range(1, DEVICES + 1)] == [1] * DEVICES
            kept = [v for v, row in rows.items() if row["params_sha256"] is not None]
            assert DEVICES in kept and 0 in kept
            assert len(kept) < DEVICES + 1, "every version kept: the uploads did not share a commit"
            dropped = sorted(set(rows) - set(kept))
            for version in dropped:
                with pytest.raises(ServerError) as refused:
                    await admin.request("GET", f"/admin/v1/tasks/t1/versions/{version}/model.onnx")
                assert (refused.value.status, refused.value.code) == (404, "params_not_kept")
            assert await admin.request("GET", f"/admin/v1/tasks/t1/versions/{DEVICES}/model.onnx")

        for version in dropped:
            url = f"{server.url}/v1/tasks/t1/versions/{version}/params"
            async with http.get(url, headers={**auth, "Accept": "application/json"}) as r:
                body = await r.json()
                assert r.status == 404, body
                assert body["error"]["code"] == "params_not_kept"
        for version in kept:
            url = f"{server.url}/v1/tasks/t1/versions/{version}/params"
            async with http.get(url, headers=auth) as r:
                assert r.status == 200
                assert r.headers["ETag"].strip('"') == rows[version]["params_sha256"]
