"""Contract suite for :class:`UpdateQueue`: the local log and the Redis stream alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from server.coordination.locallog import LocalLogQueue
from server.coordination.queue import START, QueuedUpdate, UpdateQueue
from server.coordination.redis_queue import RedisStreamQueue
from tests.services import redis_namespace

QueueFactory = Callable[[], Awaitable[UpdateQueue]]


@pytest.fixture(params=["local_log", "redis_stream"])
async def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    """A factory: each call opens the same queue anew (a restarted process)."""
    opened: list[UpdateQueue] = []
    if request.param == "local_log":

        async def factory() -> UpdateQueue:
            queue = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
            opened.append(queue)
            return queue

        yield factory
        for queue in opened:
            await queue.close()
        return
    async with redis_namespace() as (client, keys):

        async def redis_factory() -> UpdateQueue:
            return RedisStreamQueue(client, keys)

        yield redis_factory


def _update(i: int, task: str = "t") -> QueuedUpdate:
    return QueuedUpdate(
        update_id=f"u{i}",
        task_id=task,
        device_id=f"d{i}",
        base_version=i,
        num_examples=i + 1,
        created_at=float(i),
        body=bytes([i]) * (i + 3),
        metrics={"i": i},
    )


async def _take(queue: UpdateQueue, after: str, n: int, task: str = "t") -> list[QueuedUpdate]:
    out: list[QueuedUpdate] = []
    stream = queue.consume(task, after)
    async for update in stream:
        out.append(update)
        if len(out) == n:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    return out


async def test_updates_come_back_in_order_with_increasing_positions(
    make_queue: QueueFactory,
) -> None:
    queue = await make_queue()
    positions = [await queue.append(_update(i)) for i in range(5)]
    got = await _take(queue, START, 5)

    keys = [queue.position_key(p) for p in positions]
    assert keys == sorted(keys)
    assert len(set(positions)) == 5
    assert [u.update_id for u in got] == ["u0", "u1", "u2", "u3", "u4"]
    assert [u.position for u in got] == positions
    assert got[3].body == _update(3).body
    assert (got[3].device_id, got[3].base_version, got[3].num_examples) == ("d3", 3, 4)
    assert got[3].metrics == {"i": 3}


async def test_consume_resumes_after_a_position_in_a_new_process(make_queue: QueueFactory) -> None:
    first = await make_queue()
    positions = [await first.append(_update(i)) for i in range(6)]
    await first.close()

    second = await make_queue()
    got = await _take(second, positions[2], 3)

    assert [u.update_id for u in got] == ["u3", "u4", "u5"]
    assert await second.appended_count("t") == 6
    assert await second.last_position("t") == positions[-1]


async def test_trim_keeps_what_follows_the_committed_position(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    positions = [await queue.append(_update(i)) for i in range(4)]
    await queue.trim("t", positions[1])
    got = await _take(queue, positions[1], 2)

    assert [u.update_id for u in got] == ["u2", "u3"]
    assert await queue.appended_count("t") == 4  # trimming does not un-count


async def test_an_empty_queue(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    assert await queue.appended_count("nothing") == 0
    assert queue.position_key(await queue.last_position("nothing")) == queue.position_key(START)


async def test_tasks_do_not_see_each_other(make_queue: QueueFactory) -> None:
    queue = await make_queue()
    await queue.append(_update(0, "a"))
    await queue.append(_update(1, "b"))
    await queue.append(_update(2, "a"))
    got = await _take(queue, START, 2, task="a")
    assert [u.update_id for u in got] == ["u0", "u2"]
