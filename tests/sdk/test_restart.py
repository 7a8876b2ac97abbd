"""Servers of their own: one killed (-9) and restarted in the middle of an upload (the
device retries through the outage; its update counts once), one with a tight rate limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from client_sdk import ClientOptions, Event, RetryPolicy, Trained
from tests.conftest import ServerProcessFactory
from tests.sdk.proxy import Decision, FaultProxy, ProxyRequest
from tests.sdk.support import ClientFactory
from tests.server.fleet import create_task, status, wait_for


async def test_a_server_restarted_mid_upload_counts_the_update_once(
    start_server: ServerProcessFactory, make_client: ClientFactory, tmp_path: Path
) -> None:
    server = start_server(name="restarting")
    await create_task(
        server, "t1", aggregation={"aggregation_goal": 1, "optimizer": {"name": "fedavg"}}
    )
    proxy = await FaultProxy(server.port).start()
    reached, release = asyncio.Event(), asyncio.Event()

    def lose_first_upload(request: ProxyRequest) -> Decision:
        first = request.path.endswith("/updates") and not reached.is_set()
        return "lose" if first else "pass"

    async def hold_first_upload(request: ProxyRequest) -> None:
        if request.path.endswith("/updates") and not reached.is_set():
            reached.set()  # the server has stored and acknowledged it
            await release.wait()

    proxy.decide = lose_first_upload
    proxy.after_forward = hold_first_upload
    retry = RetryPolicy(max_attempts=200, base_delay_s=0.05, max_delay_s=0.3, max_elapsed_s=90)
    client = make_client(proxy.url, "t1", server.enrollment_key, options=ClientOptions(retry=retry))
    try:
        round_ = asyncio.create_task(client.run_once())
        await asyncio.wait_for(reached.wait(), timeout=30)
        await asyncio.to_thread(server.kill)
        release.set()  # the answer is lost; retries now meet a dead server
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.restart)
        result = await asyncio.wait_for(round_, timeout=60)
    finally:
        await proxy.close()
    final = await wait_for(server, lambda s: s["updates_applied"] >= 1, "t1")

    assert isinstance(result, Trained) and result.duplicate
    assert any(e.fate == "down" for e in proxy.exchanges)
    assert final["updates_accepted"] == 1
    assert final["updates_applied"] + final["updates_buffered"] == 1


async def test_the_servers_own_rate_limit_is_ridden_out(
    start_server: ServerProcessFactory, make_client: ClientFactory
) -> None:
    server = start_server(
        name="rate-limited",
        env={"ASYNCFL_DEVICE_RATE_PER_S": "2", "ASYNCFL_DEVICE_RATE_BURST": "3"},
    )
    await create_task(server, "t1")
    retries: list[Event] = []
    client = make_client(
        server.url,
        "t1",
        server.enrollment_key,
        on_event=lambda e: retries.append(e) if e.kind == "retry" else None,
    )

    results = [await client.run_once() for _ in range(2)]

    assert all(isinstance(r, Trained) for r in results)
    assert retries and all("429" in e.data["error"] for e in retries)
    assert all(e.data["delay_s"] >= 1.0 for e in retries)  # the server's Retry-After
    assert (await status(server, "t1"))["updates_accepted"] == 2
