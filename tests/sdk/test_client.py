"""The production client against a real server process over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import (
    ClientOptions,
    EligibilityPolicy,
    Evaluated,
    Event,
    ManualDeviceState,
    NoSlot,
    NotEligible,
    Rejected,
    Trained,
)
from client_sdk.api import UPDATE_FIELDS, ServerApi
from client_sdk.data import ArrayDataSource, Batch
from client_sdk.privacy import global_norm
from client_sdk.transport import AiohttpTransport
from client_sdk.wire import decode_tensors, pack, unpack
from server.admin_client import AdminClient
from server.process import ServerProcess
from tests.sdk.proxy import FaultProxy, ProxyRequest, Reply
from tests.sdk.support import ELIGIBLE, QUICK_RETRY, ClientFactory, local_data
from tests.server.fleet import create_task, status, wait_for


async def test_a_round_trains_uploads_and_reports_events(
    server: ServerProcess, task: str, make_client: ClientFactory, tmp_path: Path
) -> None:
    events: list[Event] = []
    client = make_client(server.url, task, server.enrollment_key, on_event=events.append)

    result = await client.run_once()
    await asyncio.sleep(0)  # let progress events queued by the worker thread run
    final = await status(server, task)

    assert isinstance(result, Trained)
    assert (result.version, result.num_examples, result.steps) == (0, 120, 8)  # 120 / 16
    assert result.stopped == "completed" and not result.duplicate
    assert final["updates_accepted"] == 1
    kinds = [e.kind for e in events]
    assert kinds[0] == "checkin" and kinds[-1] == "upload" and "progress" in kinds
    assert (tmp_path / "device" / "device.json").exists()
    assert list((tmp_path / "device" / "sessions").iterdir()) == []


async def test_a_restarted_app_downloads_no_graph_bytes_and_does_not_enroll_again(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    first = await make_client(proxy.url, task, server.enrollment_key).run_once()
    first_graph_bytes = proxy.bytes_for("/v1/artifacts/")
    proxy.exchanges.clear()
    # a new Client on the same storage folder: what an app restart does
    second = await make_client(proxy.url, task, server.enrollment_key).run_once()

    assert isinstance(first, Trained) and isinstance(second, Trained)
    assert first_graph_bytes > 10_000
    assert proxy.bytes_for("/v1/artifacts/") == 0
    assert not any(e.path.startswith("/v1/artifacts/") for e in proxy.exchanges)
    assert proxy.count("/v1/devices/enroll") == 1


async def test_expired_cache_entries_are_revalidated_by_etag_without_body_bytes(
    server: ServerProcess,
    task: str,
    proxy: FaultProxy,
    make_client: ClientFactory,
    tmp_path: Path,
) -> None:
    await make_client(proxy.url, task, server.enrollment_key).run_once()
    for meta in (tmp_path / "device" / "cache").glob("graph-*.json"):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "expires_at": 0.0}))
    proxy.requests.clear()
    proxy.exchanges.clear()

    result = await make_client(proxy.url, task, server.enrollment_key).run_once()

    graph_gets = [r for r in proxy.requests if r.path.startswith("/v1/artifacts/")]
    assert isinstance(result, Trained)
    assert len(graph_gets) == 4  # manifest + 3 graphs, each a conditional GET
    assert all("if-none-match" in r.headers for r in graph_gets)
    assert {e.status for e in proxy.exchanges if e.path.startswith("/v1/artifacts/")} == {304}
    assert proxy.bytes_for("/v1/artifacts/") == 0


async def test_an_ineligible_device_never_checks_in_nor_trains(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    events: list[Event] = []
    state = ManualDeviceState(ELIGIBLE, charging=False, battery=0.1)
    client = make_client(
        proxy.url,
        task,
        server.enrollment_key,
        policy=EligibilityPolicy(),
        device_state=state,
        on_event=events.append,
    )

    result = await client.run_once()

    assert result == NotEligible(("not_charging", "battery_low"))
    assert proxy.requests == []
    assert [e.kind for e in events] == ["not_eligible"]
    assert (await status(server, task))["active_sessions"] == 0


class _UnpluggedAfter:
    """Local data whose reading unplugs the charger after ``n`` batches (as a user would)."""

    def __init__(self, data: ArrayDataSource, state: ManualDeviceState, n: int) -> None:
        self.data, self.state, self.n = data, state, n

    def count(self) -> int:
        return self.data.count()

    def batches(self, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        for i, batch in enumerate(self.data.batches(batch_size, seed=seed)):
            if i == self.n:
                self.state.update(charging=False)
            yield batch


async def test_a_device_turning_ineligible_mid_training_uploads_nothing(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    state = ManualDeviceState(ELIGIBLE)
    client = make_client(
        proxy.url,
        task,
        server.enrollment_key,
        data=_UnpluggedAfter(local_data(400), state, n=5),
        policy=EligibilityPolicy(),
        device_state=state,
    )

    result = await client.run_once()

    after = await status(server, task)
    assert result == NotEligible(("not_charging",), during_training=True)
    assert proxy.count("/v1/tasks/", "POST") == 2  # the check-in and the release; no upload
    assert proxy.count(f"/v1/tasks/{task}/sessions/release") == 1
    assert proxy.count(f"/v1/tasks/{task}/updates") == 0
    assert after["updates_accepted"] == 0
    assert after["active_sessions"] == 0  # the slot went back to the task at once


async def test_the_upload_carries_only_declared_fields_and_a_clipped_update(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    data = local_data()
    options = ClientOptions(retry=QUICK_RETRY, upload_margin_s=1.0, clip_norm=0.05)
    client = make_client(proxy.url, task, server.enrollment_key, data=data, options=options)

    result = await client.run_once()
    (upload,) = [r for r in proxy.requests if r.path.endswith("/updates")]
    body = unpack(upload.body)
    tensors = decode_tensors(body["tensors"])

    assert isinstance(result, Trained)
    assert set(body) == UPDATE_FIELDS
    assert set(body["metrics"]) == {"loss", "steps", "train_s", "download_bytes"}
    assert (body["base_version"], body["num_examples"], body["encoding"]) == (0, 120, "float32")
    assert [t.shape for t in tensors] == [(10, 64), (10,)]
    assert global_norm(tensors) <= 0.05 * (1 + 1e-5)
    params_bytes = sum(t.nbytes for t in tensors)
    assert len(upload.body) < params_bytes + 1024  # the update and a few fields, no data
    assert data.x[0].tobytes()[:32] not in upload.body


async def test_federated_evaluation_runs_when_the_server_asks(
    server: ServerProcess, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    task = f"fed-{uuid.uuid4().hex[:6]}"
    await create_task(server, task, concurrency=10, federated_eval_fraction=1.0)
    client = make_client(proxy.url, task, server.enrollment_key)

    result = await client.run_once()
    (report,) = [unpack(r.body) for r in proxy.requests if r.path.endswith("/evaluations")]
    after = await status(server, task)

    assert isinstance(result, Trained) and result.evaluation is not None
    assert set(report) == {"session", "version", "metrics"}
    assert set(report["metrics"]) == {"loss", "accuracy", "num_examples"}
    assert report["metrics"]["num_examples"] == 120.0
    assert after["updates_accepted"] == 1
    assert after["federated_eval"]["devices"] == 1
    assert after["federated_eval"]["examples"] == 120
    assert after["federated_eval"]["accuracy"] == pytest.approx(report["metrics"]["accuracy"])


async def test_an_evaluation_only_session_reports_metrics_and_uploads_nothing(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    def rewrite(request: ProxyRequest, status_code: int, body: bytes) -> bytes:
        if not request.path.endswith("/checkin") or status_code != 200:
            return body
        return pack({**unpack(body), "evaluate": True, "train": False})

    proxy.rewrite = rewrite
    proxy.decide = lambda r: Reply(201, pack({})) if r.path.endswith("/evaluations") else "pass"
    client = make_client(proxy.url, task, server.enrollment_key)

    result = await client.run_once()

    assert isinstance(result, Evaluated) and result.version == 0
    assert set(result.metrics) == {"loss", "accuracy", "num_examples"}
    assert proxy.count(f"/v1/tasks/{task}/updates") == 0


async def test_a_full_task_answers_no_slot_with_retry_after(
    server: ServerProcess, make_client: ClientFactory
) -> None:
    await create_task(server, "full", concurrency=1)
    transport = AiohttpTransport(server.url)
    try:
        api = ServerApi(transport)
        _, token = await api.enroll(server.enrollment_key, {})
        held = await api.checkin("full", token, {})  # takes the only slot
        result = await make_client(server.url, "full", server.enrollment_key).run_once()
    finally:
        await transport.close()

    assert held.admitted
    assert isinstance(result, NoSlot) and result.reason == "no_slot"
    assert result.retry_after > 0


async def test_a_stale_update_comes_back_rejected_with_the_servers_reason(
    server: ServerProcess, make_client: ClientFactory, tmp_path: Path
) -> None:
    await create_task(
        server,
        "strict",
        concurrency=10,
        aggregation={"aggregation_goal": 1, "max_staleness": 0, "optimizer": {"name": "fedavg"}},
    )
    go = threading.Event()

    class _Waits(ArrayDataSource):
        def batches(self, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
            go.wait(30)  # hold training until another device moved the model on
            yield from super().batches(batch_size, seed=seed)

    slow_data = _Waits(local_data().x, local_data().y)
    slow = make_client(
        server.url, "strict", server.enrollment_key, data=slow_data, storage=tmp_path / "slow"
    )
    fast = make_client(server.url, "strict", server.enrollment_key, storage=tmp_path / "fast")

    slow_round = asyncio.create_task(slow.run_once())
    await asyncio.sleep(0.5)  # slow has checked in for version 0
    fast_result = await fast.run_once()
    await wait_for(server, lambda s: s["version"] >= 1, "strict")
    go.set()
    slow_result = await slow_round

    assert isinstance(fast_result, Trained)
    assert slow_result == Rejected("too_stale", 409, slow_result.message)


async def test_training_stops_at_the_session_deadline_and_still_uploads(
    server: ServerProcess, make_client: ClientFactory
) -> None:
    await create_task(
        server,
        "deadline",
        session_deadline_s=2.5,
        plan={"lr": 0.01, "batch_size": 8, "epochs": 1000},
    )
    options = ClientOptions(retry=QUICK_RETRY, upload_margin_s=1.0, min_train_s=0.2)
    data = local_data(4000)  # 500,000 steps in the plan: far more than 1.5 s of training
    client = make_client(server.url, "deadline", server.enrollment_key, data=data, options=options)

    result = await client.run_once()

    assert isinstance(result, Trained)
    assert result.stopped == "time_budget"
    assert 1.0 < result.train_s < 1.8  # deadline 2.5 s minus the 1 s upload margin
    assert (await status(server, "deadline"))["updates_accepted"] == 1


async def test_a_refused_device_token_enrolls_again(
    server: ServerProcess, task: str, make_client: ClientFactory, tmp_path: Path
) -> None:
    storage = tmp_path / "device"
    storage.mkdir()
    (storage / "device.json").write_text('{"device_id": "x", "device_token": "forged"}')

    result = await make_client(server.url, task, server.enrollment_key).run_once()

    assert isinstance(result, Trained)
    assert "forged" not in (storage / "device.json").read_text()


def test_the_sync_client_runs_rounds_without_an_event_loop(
    server: ServerProcess, tmp_path: Path
) -> None:
    from client_sdk import Credentials, SyncClient

    asyncio.run(create_task(server, "sync"))
    options = ClientOptions(retry=QUICK_RETRY, round_interval_s=0.0)
    with SyncClient(
        server.url,
        "sync",
        Credentials(enrollment_key=server.enrollment_key),
        local_data(),
        tmp_path / "device",
        policy=EligibilityPolicy.always(),
        options=options,
    ) as client:
        client.run_forever(max_rounds=2)
        stop = threading.Event()
        stop.set()
        client.run_forever(stop)  # returns at once: already stopped

    async def accepted() -> int:
        return int((await status(server, "sync"))["updates_accepted"])

    assert asyncio.run(accepted()) == 2


async def test_pausing_the_task_turns_devices_away(
    server: ServerProcess, task: str, make_client: ClientFactory
) -> None:
    async with AdminClient(server.url, server.admin_token) as admin:
        await admin.request("POST", f"/admin/v1/tasks/{task}/pause")

    result = await make_client(server.url, task, server.enrollment_key).run_once()

    assert isinstance(result, NoSlot) and result.reason == "task_paused"
