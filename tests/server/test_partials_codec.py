"""The partial stream's codec: what a replica ships is what the leader reads back, groups
in base-version order and entries in arrival order alike; anything else is a
PoisonRecord, never another exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation.config import AggregationConfig
from server.aggregation.partial import PartialBuilder
from server.aggregation.validation import ModelSpec
from server.coordination.partials import PoisonRecord, decode, encode

SPEC = ModelSpec.of([[3, 2], [4]])


@settings(max_examples=60, deadline=None)
@given(bases=st.lists(st.integers(0, 6), min_size=1, max_size=12))
def test_a_partial_of_several_base_versions_reads_back_whole(bases: list[int]) -> None:
    builder = PartialBuilder(SPEC, AggregationConfig(aggregation_goal=10))
    rng = np.random.default_rng(len(bases))
    entries = []
    for i, base in enumerate(bases):  # arrival order: base versions interleaved
        tensors = [rng.standard_normal(s).astype(np.float32) for s in SPEC.shapes]
        builder.add(f"u{i}", tensors, 1 + i, base)
        entries.append({"id": f"u{i}", "device_id": f"d{i % 3}", "base_version": base})
    partial = builder.seal()
    meta, body = encode("p1", "r1", 12.5, partial, entries)

    record = decode(meta, body, "1-0")

    assert record.entries == entries
    assert sorted(record.partial.ids) == sorted(e["id"] for e in entries)
    by_id = {e["id"]: e for e in entries}
    for sent, got in zip(partial.groups, record.partial.groups, strict=True):
        assert got.base_version == sent.base_version and got.ids == sent.ids
        assert np.array_equal(got.total, sent.total)
        assert got.sources == tuple(by_id[i]["device_id"] for i in got.ids)
        assert {by_id[i]["base_version"] for i in got.ids} == {got.base_version}


@settings(max_examples=200, deadline=None)
@given(meta=st.binary(max_size=300), body=st.binary(max_size=64))
def test_garbage_is_a_poison_record(meta: bytes, body: bytes) -> None:
    try:
        decode(meta, body, "1-0")
    except PoisonRecord as poison:
        position = poison.position
    else:
        position = "1-0"  # an accident of bytes that is a well-formed partial
    assert position == "1-0"


def test_entries_that_do_not_match_the_groups_are_poison() -> None:
    builder = PartialBuilder(SPEC, AggregationConfig(aggregation_goal=10))
    builder.add("u0", [np.zeros(s, np.float32) for s in SPEC.shapes], 1, 0)
    meta, body = encode("p", "r", 1.0, builder.seal(), [{"id": "other", "device_id": "d"}])
    with pytest.raises(PoisonRecord, match="entries"):
        decode(meta, body, "2-0")
