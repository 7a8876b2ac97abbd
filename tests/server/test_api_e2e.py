"""The HTTP API end to end through a running server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import aiohttp
import numpy as np
import onnxruntime as ort

from client_sdk.results import Trained
from server.admin_client import AdminClient
from server.modeling.datasets import load_dataset
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, wait_for


async def test_a_fleet_trains_a_task_through_the_api(
    start_server: ServerProcessFactory, database_url: str
) -> None:
    server = start_server(database_url=database_url)
    created = await create_task(server)
    fleet = await Fleet(server).enroll(4)
    try:
        outcomes = await fleet.run(rounds=3)
    finally:
        await fleet.close()

    uploaded = [o for o in outcomes if isinstance(o, Trained)]
    final = await wait_for(
        server, lambda s: s["updates_buffered"] == 0 or s["updates_applied"] >= 12
    )
    assert created["version"] == 0 and created["mode"] == "async"
    assert len(uploaded) == 12
    assert final["updates_accepted"] == 12
    assert final["updates_applied"] + final["updates_buffered"] == 12
    assert final["version"] == final["updates_applied"] // 2  # K = 2
    assert final["updates_rejected"] == {}


async def test_versions_are_evaluated_and_downloadable_as_onnx(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    await create_task(server)
    fleet = await Fleet(server).enroll(2)
    try:
        await fleet.run(rounds=2)
    finally:
        await fleet.close()
    status = await wait_for(server, lambda s: s["last_eval"] is not None and s["version"] >= 2)

    async with AdminClient(server.url, server.admin_token) as admin:
        versions = await admin.versions("t1")
        model = await admin.request("GET", "/admin/v1/tasks/t1/versions/latest/model.onnx")
    _, _, x_test, _ = load_dataset("digits")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x_test[:5]})

    assert status["last_eval"]["count"] == len(x_test)
    assert 0.0 <= status["last_eval"]["accuracy"] <= 1.0
    assert [v["version"] for v in versions] == sorted(
        (v["version"] for v in versions), reverse=True
    )
    assert any(v["metrics"] for v in versions)
    assert np.asarray(logits).shape == (5, 10)


async def test_artifacts_are_cacheable_by_etag(start_server: ServerProcessFactory) -> None:
    server = start_server()
    created = await create_task(server)
    fleet = await Fleet(server).enroll(1)
    token = fleet.devices[0].token
    digest = created["artifacts"]["train_step"]
    try:
        first = await fleet.api.fetch(f"/v1/artifacts/{digest}", token)
        again = await fleet.api.fetch(f"/v1/artifacts/{digest}", token, etag=first.etag)
        params = await fleet.api.fetch("/v1/tasks/t1/versions/0/params", token)
        params_again = await fleet.api.fetch("/v1/tasks/t1/versions/0/params", token, params.etag)
    finally:
        await fleet.close()

    assert first.body is not None and first.etag == f'"{digest}"'
    assert again.body is None  # 304
    assert params.body is not None and params_again.body is None


async def test_health_readiness_metrics_and_openapi(start_server: ServerProcessFactory) -> None:
    server = start_server()
    await create_task(server)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{server.url}/readyz") as r:
            assert (await r.json())["ready"] is True
        async with http.get(f"{server.url}/metrics") as r:
            text = await r.text()
        async with http.get(f"{server.url}/v1/openapi.json") as r:
            doc = await r.json()

    assert 'asyncfl_model_version{task="t1"} 0.0' in text
    assert "asyncfl_http_requests_total" in text
    assert doc["openapi"].startswith("3.")
    assert "/v1/tasks/{task}/updates" in doc["paths"]


async def test_sync_mode_runs_rounds(start_server: ServerProcessFactory) -> None:
    server = start_server()
    await create_task(
        server,
        concurrency=8,
        aggregation={
            "mode": "sync",
            "aggregation_goal": 3,
            "over_selection": 0.0,
            "round_timeout_s": 30,
            "optimizer": {"name": "fedavg", "lr": 1.0},
        },
    )
    fleet = await Fleet(server).enroll(3)
    try:
        outcomes = await fleet.run(rounds=2)
    finally:
        await fleet.close()
    final = await wait_for(server, lambda s: s["version"] >= 2)

    assert final["mode"] == "sync"
    assert sum(isinstance(o, Trained) for o in outcomes) == 6
    assert final["updates_applied"] == 6
