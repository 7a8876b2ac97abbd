"""Checkpoint slots: the newest whole record wins, a torn or corrupt one never does; a
record of versions that never committed is passed over for the one before."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.wire import pack
from server.errors import StorageError
from server.tasks.checkpoints import CheckpointLog


async def test_the_newest_record_is_read_back_with_its_sum(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "always")
    total = np.arange(1000, dtype=np.float32)
    for version in range(3):
        await log.write({"task": "t", "version": version}, (total * version).tobytes())
    latest = log.read_latest()
    log.close()

    assert latest is not None
    assert latest.seq == 3 and latest.meta == {"task": "t", "version": 2}
    np.testing.assert_array_equal(np.frombuffer(latest.total, np.float32), total * 2)


async def test_a_reopened_log_continues_numbering(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "never")
    await log.write({"v": 1}, b"")
    await log.write({"v": 2}, b"")
    log.close()

    reopened = CheckpointLog(tmp_path, "never")
    seq = await reopened.write({"v": 3}, b"abcd")
    latest = reopened.read_latest()
    reopened.close()

    assert seq == 3
    assert latest is not None and latest.meta == {"v": 3} and bytes(latest.total) == b"abcd"


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 200), flip=st.integers(0, 199))
def test_a_torn_or_flipped_newest_slot_falls_back_to_the_previous_record(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flip: int
) -> None:
    import asyncio

    directory = tmp_path_factory.mktemp("slots")

    async def write_two() -> None:
        log = CheckpointLog(directory, "always")
        await log.write({"v": 1}, b"\x01" * 64)
        await log.write({"v": 2}, b"\x02" * 64)
        log.close()

    asyncio.run(write_two())
    newest = directory / "slot-0"  # seq 2 went to slot 2 % 2
    data = bytearray(newest.read_bytes())
    if cut < len(data) - 1:
        data = data[:cut]  # a write torn at `cut` bytes
    else:
        data[flip % len(data)] ^= 0x40  # one flipped bit anywhere
    newest.write_bytes(bytes(data))

    log = CheckpointLog(directory, "always")
    latest = log.read_latest()
    log.close()

    assert latest is not None
    assert latest.meta == {"v": 1} and bytes(latest.total) == b"\x01" * 64


async def test_a_failed_write_stops_the_log(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "always")
    await log.write({"v": 1}, b"")
    for fd in log._fds:  # the disk goes away under the log
        os.close(fd)
    log._fds = [os.open(os.devnull, os.O_RDONLY)] * 2

    with pytest.raises(StorageError):
        await log.write({"v": 2}, b"x")
    with pytest.raises(StorageError):
        await log.write({"v": 3}, b"x")  # fail-stop: no later write goes through


async def test_a_record_ahead_of_the_committed_head_is_passed_over(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "never")
    await log.write({"task": "t", "version": 4, "n": "a"}, b"")
    await log.write({"task": "t", "version": 5, "n": "b"}, b"")  # its commit did not happen

    at_4, at_5, at_6 = (log.resumable("t", head) for head in (4, 5, 6))
    other = log.resumable("u", 5)
    log.close()

    assert at_4 is not None and at_4.meta["n"] == "a"
    assert at_5 is not None and at_5.meta["n"] == "b"
    assert at_6 is None  # spent: both are older than the head
    assert other is None


async def test_the_record_resumed_from_survives_a_torn_next_write(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "always")
    await log.write({"task": "t", "version": 4}, b"\x04" * 16)  # seq 1: slot-1
    await log.write({"task": "t", "version": 5}, b"\x05" * 16)  # seq 2: slot-0, not committed
    log.close()

    log = CheckpointLog(tmp_path, "always")
    record = log.resumable("t", 4)
    assert record is not None and record.seq == 1
    log.keep(record)
    seq = await log.write({"task": "t", "version": 5, "again": True}, b"\x06" * 16)
    log.close()
    assert seq == 2  # over the record that was passed over, not the one resumed from
    slot = tmp_path / "slot-0"
    slot.write_bytes(slot.read_bytes()[:20])  # and that write was torn

    log = CheckpointLog(tmp_path, "always")
    again = log.resumable("t", 4)
    log.close()
    assert again is not None and again.seq == 1 and bytes(again.total) == b"\x04" * 16


def _job(version: int, *ids: str) -> bytes:
    return pack({"version": version, "applied": [{"id": i} for i in ids]})


async def test_held_ids_are_the_buffer_and_the_versions_the_database_lacks(
    tmp_path: Path,
) -> None:
    log = CheckpointLog(tmp_path, "never")
    await log.write(
        {"task": "t", "version": 3, "entries": [{"id": "b"}], "jobs": [_job(2, "x"), _job(3, "y")]},
        b"",
    )
    await log.write({"task": "u", "version": 9, "entries": [{"id": "z"}], "jobs": []}, b"")

    held = {head: log.held("t", head) for head in (1, 2, 3, 4)}
    latest, other = log.latest("t"), log.latest("u")
    log.close()

    assert held[1] == ["b", "x", "y"]  # versions 2 and 3 commit at the restart
    assert held[2] == ["b", "y"]
    assert held[3] == ["b"]
    assert held[4] == []  # behind the head: spent, nothing of it is brought back
    assert latest is not None and latest.meta["version"] == 3
    assert other is not None and other.meta["version"] == 9


async def test_held_ids_of_an_earlier_release_s_records_are_those_at_the_head(
    tmp_path: Path,
) -> None:
    log = CheckpointLog(tmp_path, "never")  # buffers only, written before their commits
    await log.write({"task": "t", "version": 4, "entries": [{"id": "a"}]}, b"")
    await log.write({"task": "t", "version": 5, "entries": [{"id": "b"}]}, b"")

    at_4, at_5 = log.held("t", 4), log.held("t", 5)
    log.close()

    assert (at_4, at_5) == (["a"], ["b"])
