"""The web SDK's Client in Node against a real server: the protocol's edge cases."""

from __future__ import annotations

import asyncio
from pathlib import Path

from client_sdk.api import UPDATE_FIELDS, ServerApi
from client_sdk.transport import AiohttpTransport
from client_sdk.wire import decode_tensors, unpack
from server.admin_client import AdminClient
from server.process import ServerProcess
from tests.sdk.proxy import FaultProxy, ProxyRequest, Reply
from tests.server.fleet import create_task, status
from tests.web.conftest import DeviceConfig
from tests.web.support import run_device


async def test_a_round_checks_in_trains_and_uploads_what_the_server_accepts(
    server: ServerProcess, task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    run = await run_device(device_config(proxy.url, task), tmp_path)

    (result,) = run.results
    (upload,) = [r for r in proxy.requests if r.path.endswith("/updates")]
    body = unpack(upload.body)
    after = await status(server, task)
    assert run.returncode == 0, run.stderr
    assert result["kind"] == "trained" and not result["duplicate"]
    assert (result["version"], result["numExamples"], result["steps"]) == (0, 120, 8)
    assert set(body) == UPDATE_FIELDS
    assert (body["base_version"], body["num_examples"], body["encoding"]) == (0, 120, "float32")
    assert [t.shape for t in decode_tensors(body["tensors"])] == [(10, 64), (10,)]
    assert after["updates_accepted"] == 1
    assert [e["admitted"] for e in run.events("checkin")] == [True]


async def test_a_full_task_turns_the_device_away_with_retry_after(
    server: ServerProcess, device_config: DeviceConfig, tmp_path: Path
) -> None:
    await create_task(server, "web-full", concurrency=1)
    transport = AiohttpTransport(server.url)
    try:
        api = ServerApi(transport)
        _, token = await api.enroll(server.enrollment_key, {})
        held = await api.checkin("web-full", token, {})  # takes the only slot
        run = await run_device(device_config(server.url, "web-full"), tmp_path)
    finally:
        await transport.close()

    (result,) = run.results
    assert held.admitted
    assert result["kind"] == "no_slot" and result["reason"] == "no_slot"
    assert result["retryAfter"] > 0


async def test_a_paused_task_turns_the_device_away(
    server: ServerProcess, task: str, device_config: DeviceConfig, tmp_path: Path
) -> None:
    async with AdminClient(server.url, server.admin_token) as admin:
        await admin.request("POST", f"/admin/v1/tasks/{task}/pause")

    run = await run_device(device_config(server.url, task), tmp_path)

    assert [r["reason"] for r in run.results] == ["task_paused"]


async def test_a_lost_upload_answer_is_retried_and_acknowledged_as_a_duplicate(
    server: ServerProcess, task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    uploads = 0

    def decide(request: ProxyRequest) -> str:
        nonlocal uploads
        if request.path.endswith("/updates"):
            uploads += 1
            return (
                "lose" if uploads == 1 else "pass"
            )  # the server applied it; the device never heard
        return "pass"

    proxy.decide = decide
    run = await run_device(device_config(proxy.url, task), tmp_path)

    (result,) = run.results
    after = await status(server, task)
    assert result["kind"] == "trained" and result["duplicate"]
    assert uploads == 2 and len(run.events("retry")) == 1
    assert after["updates_accepted"] == 1  # applied once


async def test_503s_with_retry_after_are_waited_out_then_the_upload_succeeds(
    server: ServerProcess, task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    refused = 0

    def decide(request: ProxyRequest) -> str | Reply:
        nonlocal refused
        if request.path.endswith("/updates") and refused < 2:
            refused += 1
            return Reply.error(503, "unavailable", retry_after=2)
        return "pass"

    proxy.decide = decide
    run = await run_device(device_config(proxy.url, task, sleepScale=0.05), tmp_path)

    (result,) = run.results
    retries = run.events("retry")
    assert result["kind"] == "trained" and not result["duplicate"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["delayS"] >= 2.0 for r in retries)  # never sooner than Retry-After
    assert (await status(server, task))["updates_accepted"] == 1


async def test_a_device_turning_ineligible_mid_training_releases_and_uploads_nothing(
    server: ServerProcess, task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    from tests.web.support import local_data

    eligible = {"charging": True, "unmetered": True, "idle": True, "battery": 0.9}
    config = device_config(
        proxy.url,
        task,
        data=str(local_data(tmp_path / "big.msgpack", n=400)),
        policy="default",
        state=eligible,
        unplugAfter=5,
    )

    run = await run_device(config, tmp_path)

    (result,) = run.results
    after = await status(server, task)
    assert result == {"kind": "not_eligible", "reasons": ["not_charging"], "duringTraining": True}
    assert proxy.count(f"/v1/tasks/{task}/sessions/release") == 1
    assert proxy.count(f"/v1/tasks/{task}/updates") == 0
    assert after["updates_accepted"] == 0 and after["active_sessions"] == 0


async def test_an_ineligible_device_never_checks_in(
    task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    config = device_config(proxy.url, task, policy="default", state={"charging": False})

    run = await run_device(config, tmp_path)

    (result,) = run.results
    assert result["kind"] == "not_eligible" and not result["duringTraining"]
    assert set(result["reasons"]) == {
        "not_charging",
        "network_unknown",
        "idle_unknown",
        "battery_unknown",
    }
    assert proxy.requests == []


async def test_an_update_stored_past_its_deadline_is_refused_as_expired_after_a_restart(
    server: ServerProcess, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    await create_task(server, "web-expiry", concurrency=10, session_deadline_s=2.5)
    proxy.decide = lambda r: "drop" if r.path.endswith("/updates") else "pass"
    few = {
        "retry": {"maxAttempts": 2, "baseDelayS": 0.01, "maxDelayS": 0.02, "maxElapsedS": 5},
        "uploadMarginS": 0.5,
        "minTrainS": 0.1,
    }

    first = await run_device(device_config(proxy.url, "web-expiry", options=few), tmp_path)
    await asyncio.sleep(3.0)  # the session's deadline passes with the update stored
    proxy.decide = lambda r: "pass"
    second = await run_device(device_config(proxy.url, "web-expiry", options=few), tmp_path)

    assert [e["name"] for e in first.errors] == ["TransportError"]
    assert second.events("resume") == [
        {
            "sessionId": second.events("resume")[0]["sessionId"],
            "phase": "trained",
            "action": "upload",
        }
    ]
    (result,) = second.results
    assert (result["kind"], result["reason"], result["status"]) == (
        "rejected",
        "session_expired",
        410,
    )
    assert proxy.count("/v1/tasks/web-expiry/checkin") == 1  # resumed; no new session
    assert (await status(server, "web-expiry"))["updates_accepted"] == 0


async def test_a_restarted_device_downloads_no_graph_bytes_and_does_not_enroll_again(
    server: ServerProcess, task: str, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    first = await run_device(device_config(proxy.url, task), tmp_path)
    first_graph_bytes = proxy.bytes_for("/v1/artifacts/")
    proxy.exchanges.clear()

    second = await run_device(device_config(proxy.url, task), tmp_path)  # same storage folder

    assert [r["kind"] for r in first.results + second.results] == ["trained", "trained"]
    assert (
        first_graph_bytes > 10_000 and first.traffic["traffic"]["graphBytes"] == first_graph_bytes
    )
    assert second.traffic["traffic"]["graphBytes"] == 0
    assert not any(e.path.startswith("/v1/artifacts/") for e in proxy.exchanges)
    assert proxy.count("/v1/devices/enroll") == 1


async def test_federated_evaluation_is_reported_when_the_server_asks(
    server: ServerProcess, proxy: FaultProxy, device_config: DeviceConfig, tmp_path: Path
) -> None:
    await create_task(server, "web-fed", concurrency=10, federated_eval_fraction=1.0)

    run = await run_device(device_config(proxy.url, "web-fed"), tmp_path)

    (result,) = run.results
    (report,) = [unpack(r.body) for r in proxy.requests if r.path.endswith("/evaluations")]
    after = await status(server, "web-fed")
    assert result["kind"] == "trained" and result["evaluation"] is not None
    assert set(report) == {"session", "version", "metrics"}
    assert set(report["metrics"]) == {"loss", "accuracy", "num_examples"}
    assert after["federated_eval"]["devices"] == 1 and after["federated_eval"]["examples"] == 120
