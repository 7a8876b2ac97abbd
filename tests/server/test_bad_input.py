"""Bad input on every endpoint gets a 4xx with a stable code and changes nothing."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest

from client_sdk.wire import encode_tensor, pack
from server.process import ServerProcess
from tests.conftest import ServerProcessFactory
from tests.server.fleet import create_task, status

MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
MAX_BODY = 1 << 20


@dataclass
class Ctx:
    server: ServerProcess
    http: aiohttp.ClientSession
    device_token: str
    shapes: list[list[int]]

    async def post(
        self, path: str, body: bytes | io.BytesIO, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.http.post(
            self.server.url + path, data=body, headers=headers or MSGPACK
        ) as r:
            return r.status, _decode(await r.read(), r.content_type)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.get(self.server.url + path, headers=headers) as r:
            return r.status, _decode(await r.read(), r.content_type)

    async def checkin(self, task: str = "t1") -> dict[str, Any]:
        status, body = await self.post(
            f"/v1/tasks/{task}/checkin",
            pack({}),
            {**MSGPACK, "Authorization": f"Bearer {self.device_token}"},
        )
        assert status == 200 and body["admitted"], body
        return body

    def update(self, session: str, **override: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session": session,
            "base_version": 0,
            "num_examples": 10,
            "tensors": [encode_tensor(np.zeros(s, np.float32)) for s in self.shapes],
        }
        body.update(override)
        return body

    async def upload(self, body: Any, task: str = "t1") -> tuple[int, Any]:
        return await self.post(f"/v1/tasks/{task}/updates", pack(body))


def _decode(data: bytes, content_type: str) -> Any:
    if not data:
        return {}
    if "json" in content_type:
        return json.loads(data)
    return msgpack.unpackb(data)


@pytest.fixture
async def ctx(start_server: ServerProcessFactory) -> AsyncIterator[Ctx]:
    server = start_server(
        env={"ASYNCFL_MAX_BODY_BYTES": str(MAX_BODY), "ASYNCFL_DEVICE_RATE_PER_S": "1000"}
    )
    created = await create_task(server, concurrency=1000)
    await create_task(server, "t2", concurrency=1000, session_deadline_s=0.3)
    async with aiohttp.ClientSession() as http:
        enrolled = await http.post(
            server.url + "/v1/devices/enroll",
            data=pack({"enrollment_key": server.enrollment_key}),
            headers=MSGPACK,
        )
        token = msgpack.unpackb(await enrolled.read())["device_token"]
        async with http.get(
            f"{server.url}/v1/tasks/t1/versions/0/params",
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            shapes = [t["shape"] for t in msgpack.unpackb(await r.read())]
        assert created["version"] == 0
        yield Ctx(server, http, token, shapes)


def _nan(shape: list[int]) -> dict[str, Any]:
    a = np.zeros(shape, np.float32)
    a.flat[0] = np.nan
    return encode_tensor(a)


def _inf(shape: list[int]) -> dict[str, Any]:
    a = np.zeros(shape, np.float32)
    a.flat[-1] = -np.inf
    return encode_tensor(a)


UPDATE_CASES: list[tuple[str, Any, int, str]] = [
    (
        "missing tensors",
        lambda c, s: {k: v for k, v in c.update(s).items() if k != "tensors"},
        400,
        "missing_field",
    ),
    ("unknown field", lambda c, s: c.update(s, extra=1), 400, "unknown_field"),
    (
        "float64 tensors",
        lambda c, s: c.update(
            s, tensors=[encode_tensor(np.zeros(x, np.float64)) for x in c.shapes]
        ),
        422,
        "dtype_mismatch",
    ),
    (
        "wrong shape",
        lambda c, s: c.update(
            s, tensors=[encode_tensor(np.zeros([3], np.float32)), *c.update(s)["tensors"][1:]]
        ),
        422,
        "shape_mismatch",
    ),
    (
        "wrong tensor count",
        lambda c, s: c.update(s, tensors=c.update(s)["tensors"][:1]),
        422,
        "tensor_count",
    ),
    (
        "NaN",
        lambda c, s: c.update(s, tensors=[_nan(c.shapes[0]), *c.update(s)["tensors"][1:]]),
        422,
        "non_finite",
    ),
    (
        "Inf",
        lambda c, s: c.update(s, tensors=[*c.update(s)["tensors"][:-1], _inf(c.shapes[-1])]),
        422,
        "non_finite",
    ),
    (
        "short tensor data",
        lambda c, s: c.update(
            s,
            tensors=[
                {"dtype": "float32", "shape": c.shapes[0], "data": b"\x00" * 8},
                *c.update(s)["tensors"][1:],
            ],
        ),
        400,
        "bad_tensor",
    ),
    (
        "unknown dtype",
        lambda c, s: c.update(s, tensors=[{"dtype": "complex64", "shape": [1], "data": b"\0" * 8}]),
        400,
        "bad_tensor",
    ),
    ("zero examples", lambda c, s: c.update(s, num_examples=0), 400, "bad_num_examples"),
    ("negative examples", lambda c, s: c.update(s, num_examples=-5), 400, "bad_num_examples"),
    ("absurd examples", lambda c, s: c.update(s, num_examples=10**12), 400, "bad_num_examples"),
    ("string examples", lambda c, s: c.update(s, num_examples="10"), 400, "bad_field"),
    ("forged session", lambda c, s: c.update(s[:-4] + "AAAA"), 401, "invalid_session"),
    ("not a token", lambda c, s: c.update("hello"), 401, "invalid_session"),
    (
        "base version mismatch",
        lambda c, s: c.update(s, base_version=7),
        422,
        "base_version_mismatch",
    ),
    (
        "masked encoding",
        lambda c, s: c.update(s, encoding="masked_fixed_point"),
        400,
        "unsupported_encoding",
    ),
    ("NaN metric", lambda c, s: c.update(s, metrics={"loss": float("nan")}), 400, "bad_field"),
]


async def test_bad_updates_are_refused_and_change_nothing(ctx: Ctx) -> None:
    before = await status(ctx.server)
    params_before = await ctx.get(
        "/v1/tasks/t1/versions/latest/params", {"Authorization": f"Bearer {ctx.device_token}"}
    )
    results = {}
    for name, build, want_status, want_code in UPDATE_CASES:
        session = (await ctx.checkin())["session"]
        got_status, body = await ctx.upload(build(ctx, session))
        results[name] = (got_status, body.get("error", {}).get("code"))
        assert results[name] == (want_status, want_code), (name, body)
    after = await status(ctx.server)
    params_after = await ctx.get(
        "/v1/tasks/t1/versions/latest/params", {"Authorization": f"Bearer {ctx.device_token}"}
    )

    for key in ("version", "updates_accepted", "updates_applied", "updates_buffered"):
        assert after[key] == before[key], key
    assert params_after == params_before
    assert sum(after["updates_rejected"].values()) == len(UPDATE_CASES)


async def test_malformed_bodies_are_refused(ctx: Ctx) -> None:
    cases = [
        (b"\xc1\xc1garbage", 400, "malformed_body"),
        (pack([1, 2, 3]), 400, "malformed_body"),
        (b"", 400, "malformed_body"),
    ]
    for body, want_status, want_code in cases:
        got_status, doc = await ctx.post("/v1/tasks/t1/updates", body)
        assert (got_status, doc["error"]["code"]) == (want_status, want_code)


async def test_oversized_bodies_are_refused_before_reading(ctx: Ctx) -> None:
    got_status, doc = await ctx.post("/v1/tasks/t1/updates", io.BytesIO(b"\0" * (MAX_BODY + 1)))
    assert (got_status, doc["error"]["code"]) == (413, "payload_too_large")


async def test_session_misuse_is_refused(ctx: Ctx) -> None:
    # expired: task t2 has a 0.3 s deadline
    expired = (await ctx.checkin("t2"))["session"]
    await asyncio.sleep(0.5)
    assert (await ctx.upload(ctx.update(expired), "t2"))[0] == 410
    # cross-task
    other = (await ctx.checkin("t2"))["session"]
    got_status, doc = await ctx.upload(ctx.update(other), "t1")
    assert (got_status, doc["error"]["code"]) == (403, "session_task_mismatch")
    # an update refused by validation uses its session up
    session = (await ctx.checkin())["session"]
    assert (await ctx.upload(ctx.update(session, tensors=[])))[0] == 422
    got_status, doc = await ctx.upload(ctx.update(session))
    assert (got_status, doc["error"]["code"]) == (409, "session_used")
    # a body refused before the session is read leaves the session usable
    session = (await ctx.checkin())["session"]
    assert (await ctx.upload(ctx.update(session, num_examples=0)))[0] == 400
    assert (await ctx.upload(ctx.update(session)))[0] == 200


async def test_a_replayed_accepted_upload_is_acknowledged_but_applied_once(ctx: Ctx) -> None:
    session = (await ctx.checkin())["session"]
    first = await ctx.upload(ctx.update(session))
    second = await ctx.upload(ctx.update(session))
    after = await status(ctx.server)

    assert first[0] == second[0] == 200
    assert second[1]["duplicate"] is True
    assert second[1]["update_id"] == first[1]["update_id"]
    assert after["updates_accepted"] == 1


async def test_unknown_tasks_and_credentials(ctx: Ctx) -> None:
    auth = {**MSGPACK, "Authorization": f"Bearer {ctx.device_token}"}
    cases = [
        (ctx.post("/v1/tasks/nope/checkin", pack({}), auth), 404, "unknown_task"),
        (ctx.upload(ctx.update("x"), "nope"), 404, "unknown_task"),
        (ctx.post("/v1/tasks/t1/checkin", pack({}), MSGPACK), 401, "missing_token"),
        (
            ctx.post(
                "/v1/tasks/t1/checkin", pack({}), {**MSGPACK, "Authorization": "Bearer d1.x.y"}
            ),
            401,
            "invalid_device_token",
        ),
        (
            ctx.post("/v1/devices/enroll", pack({"enrollment_key": "wrong"})),
            401,
            "invalid_enrollment_key",
        ),
        (
            ctx.post(
                "/v1/tasks/t1/checkin",
                b"{}",
                {"Content-Type": "text/plain", "Authorization": f"Bearer {ctx.device_token}"},
            ),
            415,
            "unsupported_media_type",
        ),
        (ctx.get("/v1/artifacts/" + "0" * 64, auth), 404, "unknown_artifact"),
        (ctx.get("/v1/tasks/t1/versions/99/params", auth), 404, "unknown_version"),
        (ctx.get("/v1/tasks/t1/versions/abc/params", auth), 400, "bad_version"),
        (ctx.get("/admin/v1/tasks"), 401, "invalid_admin_token"),
        (ctx.get("/admin/v1/tasks", {"Authorization": "Bearer wrong"}), 401, "invalid_admin_token"),
        (ctx.get("/nowhere"), 404, "not_found"),
    ]
    for call, want_status, want_code in cases:
        got_status, doc = await call
        assert (got_status, doc["error"]["code"]) == (want_status, want_code)


async def test_bad_task_creation_is_refused(ctx: Ctx) -> None:
    admin = {
        "Authorization": f"Bearer {ctx.server.admin_token}",
        "Content-Type": "application/json",
    }
    cases = [
        ({"id": "Bad Id!", "model": "logreg"}, 400, "bad_task_id"),
        ({"id": "t1", "model": "logreg"}, 409, "task_exists"),
        ({"id": "x", "model": "logreg", "config": {"concurrency": 0}}, 400, "invalid_config"),
        (
            {"id": "x", "model": "logreg", "config": {"aggregation": {"aggregation_goal": -1}}},
            400,
            "invalid_config",
        ),
        ({"id": "x", "model": "logreg", "config": {"bogus": 1}}, 400, "invalid_config"),
        ({"id": "x"}, 400, "bad_model"),
        ({"id": "x", "model": "logreg", "evaluation": {"dataset": "nope"}}, 400, "bad_evaluation"),
        ({"id": "x", "model": "logreg", "frobnicate": True}, 400, "unknown_field"),
    ]
    for body, want_status, want_code in cases:
        got_status, doc = await ctx.post("/admin/v1/tasks", json.dumps(body).encode(), admin)
        assert (got_status, doc["error"]["code"]) == (want_status, want_code), body
    listed = await ctx.get("/admin/v1/tasks", admin)
    assert sorted(t["id"] for t in listed[1]["tasks"]) == ["t1", "t2"]
