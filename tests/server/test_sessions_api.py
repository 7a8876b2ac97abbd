"""Federated evaluation reports and early session release, through a real server."""

from __future__ import annotations

from typing import Any

import aiohttp
import msgpack

from client_sdk.wire import pack
from server.process import ServerProcess
from tests.conftest import ServerProcessFactory
from tests.server.fleet import create_task, status

MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, token: str = ""
) -> tuple[int, Any]:
    headers = {**MSGPACK, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with http.post(url, data=pack(body), headers=headers) as resp:
        data = await resp.read()
        return resp.status, msgpack.unpackb(data) if data else None


async def _device(http: aiohttp.ClientSession, server: ServerProcess) -> str:
    _, body = await _post(
        http, f"{server.url}/v1/devices/enroll", {"enrollment_key": server.enrollment_key}
    )
    return str(body["device_token"])


async def test_release_gives_the_slot_back_at_once(start_server: ServerProcessFactory) -> None:
    server = start_server()
    await create_task(server, concurrency=1)
    async with aiohttp.ClientSession() as http:
        token = await _device(http, server)
        checkin = f"{server.url}/v1/tasks/t1/checkin"
        _, first = await _post(http, checkin, {}, token)
        _, full = await _post(http, checkin, {}, token)
        released, _ = await _post(
            http, f"{server.url}/v1/tasks/t1/sessions/release", {"session": first["session"]}
        )
        _, again = await _post(http, checkin, {}, token)
        _, upload = await _post(
            http,
            f"{server.url}/v1/tasks/t1/updates",
            {"session": first["session"], "base_version": 0, "num_examples": 1, "tensors": []},
        )

    assert first["admitted"] and not full["admitted"]
    assert released == 204
    assert again["admitted"]
    assert upload["error"]["code"] == "session_used"  # a released session cannot upload


async def test_evaluation_reports_are_averaged_per_version(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    await create_task(server, concurrency=10, federated_eval_fraction=1.0)
    url = f"{server.url}/v1/tasks/t1/evaluations"
    async with aiohttp.ClientSession() as http:
        token = await _device(http, server)
        sessions = [
            (await _post(http, f"{server.url}/v1/tasks/t1/checkin", {}, token))[1] for _ in range(3)
        ]

        async def report(session: str, version: int, metrics: dict[str, Any]) -> tuple[int, Any]:
            body = {"session": session, "version": version, "metrics": metrics}
            return await _post(http, url, body)

        first, second, third = (s["session"] for s in sessions)
        reports = [
            await report(first, 0, {"loss": 1.0, "accuracy": 0.5, "num_examples": 10}),
            await report(second, 0, {"loss": 2.0, "accuracy": 1.0, "num_examples": 30}),
            await report(first, 0, {"loss": 9.0, "accuracy": 0.0, "num_examples": 99}),
        ]
        refused = [
            await report(third, 5, {"loss": 1.0, "num_examples": 1}),
            await report(third, 0, {"loss": float("nan"), "num_examples": 1}),
            await report(third, 0, {"loss": 1.0, "num_examples": 1, "secret": 3}),
            await report("forged", 0, {"loss": 1.0}),
        ]
    after = await status(server)

    assert sessions[0]["evaluate"] is True
    assert [r[0] for r in reports] == [201, 201, 200]
    assert reports[2][1]["duplicate"] is True
    assert [(r[0], r[1]["error"]["code"]) for r in refused] == [
        (409, "version_mismatch"),
        (400, "bad_field"),
        (400, "bad_field"),
        (401, "invalid_session"),
    ]
    assert after["federated_eval"] == {
        "version": 0,
        "devices": 2,
        "examples": 40,
        "loss": 1.75,
        "accuracy": 0.875,
    }
