from __future__ import annotations

import uuid

import msgpack

from server.aggregation.recent import RecentIds
from server.aggregation.snapshot import FORMAT, PackedArray, dump, load


def test_the_window_keeps_the_newest_ids_in_order() -> None:
    recent = RecentIds(3, ["a", "b"])

    recent.extend(["c", "d", "e"])

    assert list(recent) == ["c", "d", "e"]
    assert "e" in recent and "c" in recent
    assert "b" not in recent and "a" not in recent


def test_the_packed_window_is_what_packing_the_list_gives_across_compactions() -> None:
    ids = [uuid.uuid4().hex for _ in range(100_000)]  # ~3.4 MB packed: several compactions
    recent = RecentIds(10_000)

    for i in range(0, len(ids), 7):
        recent.extend(ids[i : i + 7])

    packed = recent.packed()
    window = ids[-10_000:]
    assert packed.count == len(recent) == 10_000
    assert packed.items == b"".join(msgpack.packb(i) for i in window)
    header = msgpack.Packer().pack_array_header(packed.count)
    assert msgpack.unpackb(header + packed.items) == window


def test_a_zero_window_remembers_nothing() -> None:
    recent = RecentIds(0, ["a"])

    recent.extend(["b"])

    assert len(recent) == 0 and "b" not in recent
    assert recent.packed() == PackedArray(0, b"")


def test_dump_with_a_packed_array_is_byte_identical_to_packing_the_list() -> None:
    ids = [uuid.uuid4().hex for _ in range(50)] + ["", "é" * 40]
    state = {"version": 3, "params": {"data": b"\x00" * 8}, "recent_ids": ids, "rng": None}

    spliced = dump("fedbuff", state | {"recent_ids": RecentIds(100, ids).packed()})

    plain = msgpack.packb({"format": FORMAT, "kind": "fedbuff", **state})
    assert spliced == plain
    assert load(spliced, kind="fedbuff")["recent_ids"] == ids
