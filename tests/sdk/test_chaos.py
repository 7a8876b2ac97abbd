"""Flaky networks: cut connections, lost answers, 503/429 storms. Every acknowledged
update is counted exactly once by the real server."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from client_sdk import ClientOptions, Event, RetryPolicy, Trained, TransportError
from client_sdk.wire import unpack
from server.process import ServerProcess
from tests.sdk.proxy import Decision, FaultProxy, ProxyRequest, Reply
from tests.sdk.support import ClientFactory, local_data, scaled_sleep
from tests.server.fleet import status, wait_for


def _is_upload(request: ProxyRequest) -> bool:
    return request.method == "POST" and request.path.endswith("/updates")


class _Chaos:
    """Cuts ``drop`` of all connections at random, and loses the server's answer to the
    first attempt of every upload (the server applied it; the device never heard)."""

    def __init__(self, drop: float, seed: int = 0) -> None:
        self.drop = drop
        self.rng = random.Random(seed)
        self.sessions_seen: set[str] = set()

    def __call__(self, request: ProxyRequest) -> Decision:
        if _is_upload(request):
            session = unpack(request.body)["session"]
            if session not in self.sessions_seen:
                self.sessions_seen.add(session)
                return "lose"
        return "drop" if self.rng.random() < self.drop else "pass"


async def test_cut_connections_and_lost_answers_count_each_update_once(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory, tmp_path: Path
) -> None:
    chaos = _Chaos(drop=0.3)
    proxy.decide = chaos
    clients = [
        make_client(
            proxy.url,
            task,
            server.enrollment_key,
            storage=tmp_path / f"d{i}",
            data=local_data(seed=i),
            sleep=scaled_sleep,
        )
        for i in range(3)
    ]

    async def rounds(client_index: int) -> list[object]:
        return [await clients[client_index].run_once() for _ in range(3)]

    results = [r for rs in await asyncio.gather(*(rounds(i) for i in range(3))) for r in rs]
    final = await wait_for(server, lambda s: s["updates_buffered"] < 2, task)

    trained = [r for r in results if isinstance(r, Trained)]
    assert len(trained) == 9
    assert all(r.duplicate for r in trained)  # each answer was lost once, then re-acked
    assert len({r.update_id for r in trained}) == 9
    assert final["updates_accepted"] == 9
    assert final["updates_applied"] + final["updates_buffered"] == 9
    assert any(e.fate == "drop" for e in proxy.exchanges)


async def test_503_and_429_storms_are_ridden_out_honouring_retry_after(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    rng = random.Random(1)

    def storm(request: ProxyRequest) -> Decision:
        roll = rng.random()
        if roll < 0.3:
            return Reply.error(503, "unavailable", retry_after=2)
        if roll < 0.6:
            return Reply.error(429, "rate_limited", retry_after=1)
        return "pass"

    proxy.decide = storm
    retries: list[Event] = []
    client = make_client(
        proxy.url,
        task,
        server.enrollment_key,
        sleep=scaled_sleep,
        on_event=lambda e: retries.append(e) if e.kind == "retry" else None,
    )

    results = [await client.run_once() for _ in range(3)]

    injected = [e for e in proxy.exchanges if e.fate == "local"]
    assert all(isinstance(r, Trained) for r in results)
    assert (await status(server, task))["updates_accepted"] == 3
    assert len(retries) == len(injected) > 5
    for event in retries:
        wanted = 2.0 if "503" in event.data["error"] else 1.0
        assert event.data["delay_s"] >= wanted


async def test_an_upload_that_ran_out_of_retries_is_sent_again_by_the_next_run(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    attempts = 0

    def uploads_fail(request: ProxyRequest) -> Decision:
        nonlocal attempts
        if not _is_upload(request):
            return "pass"
        attempts += 1
        return "lose" if attempts == 1 else "drop"  # applied once, then unreachable

    proxy.decide = uploads_fail
    options = ClientOptions(retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05))
    first = make_client(proxy.url, task, server.enrollment_key, options=options)
    with pytest.raises(TransportError):
        await first.run_once()
    proxy.decide = lambda _: "pass"
    # the app restarts: a new client on the same storage folder
    second = make_client(proxy.url, task, server.enrollment_key, options=options)

    result = await second.run_once()

    assert isinstance(result, Trained)
    assert result.resumed and result.duplicate
    assert result.num_examples == 120 and result.steps == 8  # from the persisted summary
    assert proxy.count(f"/v1/tasks/{task}/checkin") == 1
    assert (await status(server, task))["updates_accepted"] == 1


async def test_a_stalled_answer_times_out_and_the_retry_is_applied_once(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory
) -> None:
    stalled: list[str] = []

    async def stall_first_upload(request: ProxyRequest) -> None:
        if _is_upload(request) and not stalled:
            stalled.append(request.path)
            await asyncio.sleep(1.5)  # the server has answered; the network hangs

    proxy.after_forward = stall_first_upload
    retry = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05)
    options = ClientOptions(retry=retry, request_timeout_s=0.5)
    retries: list[Event] = []
    client = make_client(
        proxy.url,
        task,
        server.enrollment_key,
        options=options,
        on_event=lambda e: retries.append(e) if e.kind == "retry" else None,
    )

    result = await client.run_once()

    assert isinstance(result, Trained) and result.duplicate
    assert [e.data["what"] for e in retries] == [f"POST /v1/tasks/{task}/updates"]
    assert (await status(server, task))["updates_accepted"] == 1
