"""A DP task on the real embedded server pauses itself at its budget."""

from __future__ import annotations

import asyncio

from server.privacy import Accountant
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, status

Z, SEPARATION, STALENESS = 3.0, 4, 3


async def test_a_dp_task_pauses_at_its_budget_and_epsilon_never_decreases(
    start_server: ServerProcessFactory,
) -> None:
    accountant = Accountant(Z, 1e-5, min_separation=SEPARATION, max_staleness=STALENESS)
    target = accountant.epsilon(8) + 1e-9  # two updates per device: 8 versions
    server = start_server()
    await create_task(
        server,
        concurrency=4,
        aggregation={
            "aggregation_goal": 2,
            "clip_norm": 1.0,
            "max_staleness": STALENESS,
            "optimizer": {"name": "fedavg", "lr": 1.0},
        },
        privacy={
            "target_epsilon": target,
            "noise_multiplier": Z,
            "min_separation": SEPARATION,
        },
    )
    fleet = await Fleet(server).enroll(8)
    seen: list[dict[str, object]] = []
    done = asyncio.Event()

    async def watch() -> None:
        for _ in range(600):  # bounded: 60 s
            current = await status(server)
            seen.append(current)
            if current["privacy"]["budget_reached"] and current["status"] == "paused":
                done.set()
                return
            await asyncio.sleep(0.1)
        done.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(fleet.run_until(done.is_set), timeout=90)
    finally:
        await fleet.close()
        await watcher
    final = await status(server)

    epsilons = [s["privacy"]["epsilon"] for s in seen]
    assert final["status"] == "paused" and final["status_reason"] == "privacy_budget_reached"
    assert final["version"] == 8
    assert final["privacy"] == {
        "epsilon": accountant.epsilon(8),
        "epsilon_budget": target,
        "budget_reached": True,
    }
    assert epsilons == sorted(epsilons) and max(epsilons) <= target
    assert final["privacy_accounting"]["max_updates_per_version"] == 1
