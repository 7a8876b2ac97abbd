"""Contract suite for task leases with fencing tokens, in process and on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from server.coordination.leases import InProcessLeases, Leases, RedisLeases
from tests.services import redis_namespace

LeaseFactory = Callable[[str, float], Leases]


@pytest.fixture(params=["in_process", "redis"])
async def make_leases(request: pytest.FixtureRequest) -> AsyncIterator[LeaseFactory]:
    if request.param == "in_process":
        shared: dict[str, InProcessLeases] = {}

        def in_process(owner: str, ttl_s: float) -> Leases:
            # one table shared by every owner, like one Redis
            first = next(iter(shared.values()), None)
            leases = InProcessLeases(owner, ttl_s)
            if first is not None:
                leases._leases = first._leases
                leases._fences = first._fences
            shared[owner] = leases
            return leases

        yield in_process
        return
    async with redis_namespace() as (client, keys):
        yield lambda owner, ttl_s: RedisLeases(client, keys, owner, ttl_s)


async def test_one_holder_at_a_time(make_leases: LeaseFactory) -> None:
    a, b = make_leases("a", 5.0), make_leases("b", 5.0)
    fence = await a.acquire("t")
    assert fence is not None
    assert await b.acquire("t") is None
    assert await a.holder("t") == "a"


async def test_fences_grow_with_every_new_lease(make_leases: LeaseFactory) -> None:
    a, b = make_leases("a", 5.0), make_leases("b", 5.0)
    first = await a.acquire("t")
    await a.release("t")
    second = await b.acquire("t")
    assert first is not None and second is not None
    assert second > first


async def test_an_expired_lease_passes_to_another_owner(make_leases: LeaseFactory) -> None:
    a, b = make_leases("a", 0.2), make_leases("b", 5.0)
    first = await a.acquire("t")
    await asyncio.sleep(0.3)
    second = await b.acquire("t")
    assert first is not None and second is not None and second > first
    assert not await a.renew("t")  # a finds out it lost the lease


async def test_renewal_keeps_the_lease(make_leases: LeaseFactory) -> None:
    a, b = make_leases("a", 0.3), make_leases("b", 5.0)
    await a.acquire("t")
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await a.renew("t")
    assert await b.acquire("t") is None


async def test_only_the_holder_releases(make_leases: LeaseFactory) -> None:
    a, b = make_leases("a", 5.0), make_leases("b", 5.0)
    await a.acquire("t")
    await b.release("t")
    assert await a.holder("t") == "a"
    await a.release("t")
    assert await b.holder("t") is None
