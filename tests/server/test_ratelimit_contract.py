"""Contract suite for per-device rate limits, in process and on Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from server.coordination.ratelimit import LocalRateLimiter, RateLimiter
from server.coordination.redis_ratelimit import RedisRateLimiter
from tests.services import redis_namespace

LimiterFactory = Callable[[float, int], RateLimiter]


@pytest.fixture(params=["in_process", "redis"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterFactory]:
    if request.param == "in_process":
        yield LocalRateLimiter
        return
    async with redis_namespace() as (client, keys):
        yield lambda rate, burst: RedisRateLimiter(client, keys, rate, burst)


async def test_a_burst_is_allowed_then_the_device_waits(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(2.0, 3)
    waits = [await limiter.acquire("dev") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.0 < waits[3] <= 0.5 + 0.01


async def test_devices_have_separate_buckets(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(1.0, 1)
    assert await limiter.acquire("a") == 0.0
    assert await limiter.acquire("b") == 0.0
    assert await limiter.acquire("a") > 0.0


async def test_tokens_come_back_at_the_rate(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(10.0, 1)
    assert await limiter.acquire("dev") == 0.0
    assert await limiter.acquire("dev") > 0.0
    await asyncio.sleep(0.15)
    assert await limiter.acquire("dev") == 0.0
