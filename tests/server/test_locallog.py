"""The raw-upload audit log: durable appends, records read back in order, torn tails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.coordination.locallog import AuditLog, AuditRecord


def _record(i: int, task: str = "t") -> AuditRecord:
    return AuditRecord(
        update_id=f"u{i}",
        task_id=task,
        device_id=f"d{i}",
        base_version=i // 3,
        num_examples=10 + i,
        created_at=1000.0 + i,
        body=bytes([i % 256]) * (100 + i),
    )


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
async def test_appends_are_numbered_and_read_back_in_order(tmp_path: Path, fsync: str) -> None:
    log = AuditLog(tmp_path, fsync=fsync, segment_bytes=1 << 20)  # type: ignore[arg-type]
    seqs = await asyncio.gather(*(log.append(_record(i)) for i in range(20)))
    got = list(log.records("t"))
    await log.close()

    assert seqs == list(range(1, 21))
    assert [r.update_id for r in got] == [f"u{i}" for i in range(20)]
    assert [r.seq for r in got] == list(range(1, 21))
    assert got[5].body == _record(5).body and got[5].num_examples == 15


async def test_a_torn_tail_is_cut_and_the_log_continues(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_bytes=1 << 20)
    for i in range(3):
        await log.append(_record(i))
    await log.close()
    segment = next((tmp_path / "t").glob("*.log"))
    size = segment.stat().st_size
    with open(segment, "ab") as fh:  # half a record: a crash in the middle of a write
        fh.write(b"AFL1\x10\x00\x00\x00garbage")

    reopened = AuditLog(tmp_path, segment_bytes=1 << 20)
    seq = await reopened.append(_record(3))
    got = [r.update_id for r in reopened.records("t")]
    await reopened.close()

    assert segment.stat().st_size > size
    assert seq == 4
    assert got == ["u0", "u1", "u2", "u3"]


async def test_segments_roll_over_and_tasks_have_separate_logs(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_bytes=300)  # about two records per segment
    for i in range(10):
        await log.append(_record(i, "a"))
    await log.append(_record(10, "b"))
    got_a = [r.update_id for r in log.records("a")]
    counts = (log.appended("a"), log.appended("b"))
    await log.close()

    assert len(list((tmp_path / "a").glob("*.log"))) >= 4
    assert got_a == [f"u{i}" for i in range(10)]
    assert counts == (10, 1)


async def test_appended_records_survive_without_close(tmp_path: Path) -> None:
    """What kill -9 leaves: records written but the process never closed the log."""
    log = AuditLog(tmp_path, fsync="never", segment_bytes=1 << 20)
    for i in range(5):
        await log.append(_record(i))
    fresh = AuditLog(tmp_path, segment_bytes=1 << 20)  # no close(): the kernel has the bytes
    got = [r.update_id for r in fresh.records("t")]
    await fresh.close()

    assert got == [f"u{i}" for i in range(5)]
