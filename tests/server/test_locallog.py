"""The embedded update queue: durable appends, ordered replay, torn tails, trimming."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from server.coordination.locallog import LocalLogQueue
from server.coordination.queue import START, QueuedUpdate


def _update(i: int, task: str = "t") -> QueuedUpdate:
    return QueuedUpdate(
        update_id=f"u{i}",
        task_id=task,
        device_id=f"d{i}",
        base_version=i // 3,
        num_examples=10 + i,
        created_at=1000.0 + i,
        body=bytes([i % 256]) * (100 + i),
        metrics={"loss": float(i)},
    )


async def _take(queue: LocalLogQueue, task: str, after: str, n: int) -> list[QueuedUpdate]:
    out: list[QueuedUpdate] = []
    agen = queue.consume(task, after)
    async for update in agen:
        out.append(update)
        if len(out) == n:
            break
    await agen.aclose()
    return out


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_appends_are_consumed_in_order_with_positions(tmp_path: Path, fsync: str) -> None:
    queue = LocalLogQueue(tmp_path, fsync=fsync, segment_bytes=1 << 20)  # type: ignore[arg-type]
    positions = await asyncio.gather(*(queue.append(_update(i)) for i in range(20)))
    got = await _take(queue, "t", START, 20)
    await queue.close()

    assert [int(p) for p in positions] == list(range(1, 21))
    assert [u.update_id for u in got] == [f"u{i}" for i in range(20)]
    assert [u.position for u in got] == [str(i) for i in range(1, 21)]
    assert got[5].body == _update(5).body and got[5].metrics == {"loss": 5.0}


async def test_reopened_log_replays_only_after_the_committed_position(tmp_path: Path) -> None:
    queue = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    for i in range(10):
        await queue.append(_update(i))
    await queue.close()

    reopened = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    replay = await _take(reopened, "t", "6", 4)
    count = await reopened.appended_count("t")
    await reopened.close()

    assert [u.update_id for u in replay] == ["u6", "u7", "u8", "u9"]
    assert replay[0].base_version == 2 and replay[0].num_examples == 16
    assert count == 10


async def test_a_torn_tail_is_cut_and_the_log_continues(tmp_path: Path) -> None:
    queue = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        await queue.append(_update(i))
    await queue.close()
    segment = next((tmp_path / "t").glob("*.log"))
    size = segment.stat().st_size
    with open(segment, "ab") as fh:  # half a record: a crash in the middle of a write
        fh.write(b"AFL1\x10\x00\x00\x00garbage")

    reopened = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    position = await reopened.append(_update(3))
    replay = await _take(reopened, "t", START, 4)
    await reopened.close()

    assert segment.stat().st_size > size
    assert position == "4"
    assert [u.update_id for u in replay] == ["u0", "u1", "u2", "u3"]


async def test_trim_deletes_only_fully_committed_segments(tmp_path: Path) -> None:
    queue = LocalLogQueue(tmp_path, segment_bytes=300)  # about two records per segment
    for i in range(10):
        await queue.append(_update(i))
    before = sorted(p.name for p in (tmp_path / "t").glob("*.log"))
    await queue.trim("t", "5")
    after = sorted(p.name for p in (tmp_path / "t").glob("*.log"))
    replay = await _take(queue, "t", "5", 5)
    await queue.close()

    assert len(before) >= 4
    assert len(after) < len(before)
    assert [u.update_id for u in replay] == ["u5", "u6", "u7", "u8", "u9"]


async def test_tasks_have_separate_logs(tmp_path: Path) -> None:
    queue = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    await queue.append(_update(0, "a"))
    await queue.append(_update(1, "b"))
    await queue.append(_update(2, "a"))
    got_a = await _take(queue, "a", START, 2)
    counts = (await queue.appended_count("a"), await queue.appended_count("b"))
    await queue.close()

    assert [u.update_id for u in got_a] == ["u0", "u2"]
    assert counts == (2, 1)


async def test_appended_records_survive_without_close(tmp_path: Path) -> None:
    """What kill -9 leaves: records written but the process never closed the log."""
    queue = LocalLogQueue(tmp_path, fsync="never", segment_bytes=1 << 20)
    for i in range(5):
        await queue.append(_update(i))
    # no close(): simulate the process vanishing; the kernel still has the bytes
    fresh = LocalLogQueue(tmp_path, segment_bytes=1 << 20)
    replay = await _take(fresh, "t", START, 5)
    await fresh.close()
    os.sync()

    assert [u.update_id for u in replay] == [f"u{i}" for i in range(5)]
