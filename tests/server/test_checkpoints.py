"""Checkpoint slots: the newest whole record wins, a torn or corrupt one never does; a
record of versions that never committed is passed over for the one before."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
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
    directory = tmp_path_factory.mktemp("slots")

    async def write_two() -> None:
        log = CheckpointLog(directory, "always")
        await log.write({"v": 1}, b"\x01" * 64, b"\x11" * 32)
        await log.write({"v": 2}, b"\x02" * 64, b"\x12" * 32)
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
    assert bytes(latest.params) == b"\x11" * 32


def _v1_record(seq: int, meta: dict[str, object], total: bytes) -> bytes:
    """A record in the earlier framing (b"AFC1", crc32, no params part), built by its rule."""
    packed = pack(meta)
    head = struct.pack("<4sQIQ", b"AFC1", seq, len(packed), len(total))
    crc = zlib.crc32(total, zlib.crc32(packed, zlib.crc32(head)))
    return head + struct.pack("<I", crc) + packed + total


async def test_records_of_the_earlier_framing_are_read_and_written_over(tmp_path: Path) -> None:
    (tmp_path / "slot-1").write_bytes(_v1_record(1, {"task": "t", "version": 4}, b"\x04" * 8))
    (tmp_path / "slot-0").write_bytes(_v1_record(2, {"task": "t", "version": 5}, b"\x05" * 8))
    bad = bytearray(_v1_record(3, {"task": "t", "version": 6}, b"\x06" * 8))
    bad[-1] ^= 1

    log = CheckpointLog(tmp_path, "always")
    latest = log.read_latest()
    assert latest is not None and latest.seq == 2 and latest.meta["version"] == 5
    assert bytes(latest.total) == b"\x05" * 8 and bytes(latest.params) == b""
    (tmp_path / "slot-1").write_bytes(bytes(bad))  # a corrupt one is passed over
    assert [r.seq for r in log.records()] == [2]
    seq = await log.write({"task": "t", "version": 6}, b"\x07" * 8, b"\x08" * 4)
    log.close()

    reopened = CheckpointLog(tmp_path, "never")
    records = reopened.records()
    reopened.close()
    assert seq == 3 and [r.seq for r in records] == [3, 2]
    assert bytes(records[0].params) == b"\x08" * 4


async def test_writes_queued_or_abandoned_are_written_before_close_returns(
    tmp_path: Path,
) -> None:
    log = CheckpointLog(tmp_path, "always")
    writes = [
        asyncio.ensure_future(log.write({"v": v}, bytes([v]) * 1000, bytes([v]) * 10))
        for v in range(1, 6)
    ]
    await asyncio.sleep(0)
    writes[-1].cancel()  # its caller goes away; the record is written all the same
    done = await asyncio.gather(*writes[:-1])
    await asyncio.to_thread(log.close)

    reopened = CheckpointLog(tmp_path, "never")
    latest = reopened.read_latest()
    reopened.close()
    assert done == [1, 2, 3, 4]
    assert latest is not None and latest.seq == 5 and latest.meta == {"v": 5}
    assert bytes(latest.params) == b"\x05" * 10


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


def test_a_forked_child_writes_with_a_writer_thread_of_its_own(tmp_path: Path) -> None:
    log = CheckpointLog(tmp_path, "never")
    asyncio.run(log.write({"v": 1}, b""))  # the parent's writer thread is started
    pid = os.fork()
    if pid == 0:  # the child has no thread but its own: the write must not wait forever
        code = 1
        try:
            asyncio.run(asyncio.wait_for(log.write({"v": 2}, b"child"), 10))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    log.close()

    reopened = CheckpointLog(tmp_path, "never")
    latest = reopened.read_latest()
    reopened.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert latest is not None and latest.meta == {"v": 2} and bytes(latest.total) == b"child"


@settings(max_examples=200, deadline=None)
@given(
    magic=st.sampled_from([b"", b"AFC1", b"AFC2"]),
    header=st.binary(max_size=48),
    rest=st.binary(max_size=256),
)
def test_arbitrary_slot_bytes_read_as_no_record_never_an_error(
    tmp_path_factory: pytest.TempPathFactory, magic: bytes, header: bytes, rest: bytes
) -> None:
    directory = tmp_path_factory.mktemp("slots")
    (directory / "slot-0").write_bytes(magic + header + rest)
    (directory / "slot-1").write_bytes(_v1_record(1, {"task": "t", "version": 1}, b"\x01" * 4))

    log = CheckpointLog(directory, "never")
    records = log.records()
    log.close()

    # random bytes never pass the checksum; the other slot's record is read as ever
    assert [r.seq for r in records] == [1] and records[0].meta["version"] == 1
