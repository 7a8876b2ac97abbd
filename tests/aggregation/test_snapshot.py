from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.wire import decode_tensor, encode_tensors, pack, unpack
from server.aggregation import (
    FedBuffAggregator,
    SnapshotError,
    SyncRoundAggregator,
    restore_aggregator,
)
from server.storage import snapshots
from tests.aggregation.support import config, model, restore, snapshot, updates

OPTIMIZERS = [
    {"name": "fedavg", "lr": 0.9},
    {"name": "fedavgm", "lr": 0.7, "momentum": 0.9},
    {"name": "fedadam"},
    {"name": "fedyogi"},
    {"name": "fedadagrad"},
]


def fingerprint(agg: FedBuffAggregator | SyncRoundAggregator) -> tuple[Any, ...]:
    return (agg.version, b"".join(p.tobytes() for p in agg.params), agg.stats, snapshot(agg))


def feed(agg: FedBuffAggregator, deltas: list[list[np.ndarray]], start: int) -> list[Any]:
    results = []
    for i, d in enumerate(deltas, start):
        base = max(0, agg.version - i % 3)
        results.append(agg.fold(f"u{i}", d, 1 + i, base))
    return results


@settings(max_examples=30, deadline=None)
@given(
    optimizer=st.sampled_from(OPTIMIZERS),
    goal=st.integers(1, 4),
    split=st.integers(0, 11),
    noisy=st.booleans(),
    normalization=st.sampled_from(["goal", "weights"]),
)
def test_fedbuff_snapshot_restore_continue_equals_continue(
    optimizer: dict[str, Any], goal: int, split: int, noisy: bool, normalization: str
) -> None:
    kwargs: dict[str, Any] = {
        "aggregation_goal": goal,
        "optimizer": optimizer,
        "normalization": normalization,
        "example_weighting": {"kind": "log", "cap": 1000},  # noise needs a bounded weight
        "seed": 11,
    }
    if noisy:
        kwargs |= {"clip_norm": 0.5, "noise_multiplier": 1.0}
    deltas = updates(12)
    straight = FedBuffAggregator(model(), config(**kwargs))
    feed(straight, deltas[:split], 0)
    restored = restore(FedBuffAggregator, snapshot(straight))

    expected = feed(straight, deltas[split:], split)
    got = feed(restored, deltas[split:], split)

    assert got == expected
    assert fingerprint(restored) == fingerprint(straight)


def test_sync_snapshot_mid_round_restores_the_round() -> None:
    kwargs = {"mode": "sync", "aggregation_goal": 3, "optimizer": {"name": "fedadam"}}
    deltas = updates(3)
    straight = SyncRoundAggregator(model(), config(**kwargs))
    straight.start_round(now=10.0)
    straight.select("d1", now=10.0)
    straight.fold("u0", deltas[0], 5, 0, now=11.0)
    restored = restore(SyncRoundAggregator, snapshot(straight))

    assert restored.current_round == straight.current_round
    for agg in (straight, restored):
        agg.select("d1", now=12.0)
        agg.fold("u1", deltas[1], 5, 0, now=12.0)
        agg.fold("u2", deltas[2], 5, 0, now=13.0)
    assert fingerprint(restored) == fingerprint(straight)


def test_restore_aggregator_dispatches_on_the_snapshot_kind() -> None:
    fedbuff = FedBuffAggregator(model(), config())
    rounds = SyncRoundAggregator(model(), config(mode="sync"))

    assert isinstance(restore_aggregator(snapshots.load(snapshot(fedbuff))), FedBuffAggregator)
    assert isinstance(restore_aggregator(snapshots.load(snapshot(rounds))), SyncRoundAggregator)


def test_restoring_as_the_wrong_kind_is_refused() -> None:
    with pytest.raises(SnapshotError, match="sync"):
        restore(FedBuffAggregator, snapshot(SyncRoundAggregator(model(), config(mode="sync"))))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: b"not msgpack \xc1",
        lambda s: msgpack.packb({"format": "other/1"}),
        lambda s: msgpack.packb({**s, "config": {"aggregation_goal": 0}}),
        lambda s: msgpack.packb({k: v for k, v in s.items() if k != "buffer"}),
        lambda s: msgpack.packb({**s, "shapes": [[2]]}),
        lambda s: msgpack.packb({**s, "params": {"dtype": "float32", "shape": [3], "data": b"x"}}),
    ],
)
def test_corrupt_snapshots_raise_snapshot_error(mangle: Any) -> None:
    agg = FedBuffAggregator(model(), config(aggregation_goal=3))
    agg.fold("u", updates(1)[0], 5, 0)
    state = msgpack.unpackb(snapshot(agg))

    with pytest.raises(SnapshotError):
        restore(FedBuffAggregator, mangle(state))


def test_a_restored_aggregator_knows_its_open_buffer() -> None:
    agg = FedBuffAggregator(model(), config(aggregation_goal=2))
    for i, d in enumerate(updates(3)):
        agg.fold(f"u{i}", d, 5, agg.version)

    restored = restore(FedBuffAggregator, snapshot(agg))

    # the open buffer's ids come back; applied ones are the ledger's to answer for
    assert restored.has_folded("u2")
    assert restored.pending_ids == ("u2",)


@settings(max_examples=20, deadline=None)
@given(
    optimizer=st.sampled_from(OPTIMIZERS),
    goal=st.integers(1, 4),
    split=st.integers(0, 11),
)
def test_a_state_stored_beside_its_params_blob_restores_as_the_whole_state(
    optimizer: dict[str, Any], goal: int, split: int
) -> None:
    """What a commit stores: the state without its parameters (``params=False``) and the
    parameters as clients download them; put back together they continue bit for bit."""
    straight = FedBuffAggregator(model(), config(aggregation_goal=goal, optimizer=optimizer))
    deltas = updates(12)
    feed(straight, deltas[:split], 0)
    stored = snapshots.dump(straight.state(buffer=False, params=False))
    wire = [decode_tensor(t) for t in unpack(pack(encode_tensors(straight.params)))]
    whole = snapshots.with_params(snapshots.load(stored), wire)
    restored = FedBuffAggregator.from_state(whole)
    assert len(stored) < len(snapshots.dump(straight.state(buffer=False)))
    if straight.buffered == 0:  # nothing open: the version's state is the whole state
        assert fingerprint(restored) == fingerprint(straight)
        assert feed(restored, deltas[split:], split) == feed(straight, deltas[split:], split)
    else:
        assert [p.tobytes() for p in restored.params] == [p.tobytes() for p in straight.params]
        assert restored.version == straight.version


def test_a_state_with_its_params_keeps_them() -> None:
    agg = FedBuffAggregator(model(), config(aggregation_goal=2))
    state = snapshots.load(snapshots.dump(agg.state()))
    kept = state["params"].copy()
    assert np.array_equal(snapshots.with_params(state, [np.ones(3, np.float32)])["params"], kept)
