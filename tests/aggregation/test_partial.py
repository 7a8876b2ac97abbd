"""Pre-aggregation: a leader merging replicas' partials computes what folding would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import FedBuffAggregator, PartialBuilder, SyncRoundAggregator
from server.errors import UpdateRejected
from tests.aggregation.support import config, flat, model, updates

WEIGHTINGS = [{"kind": "equal"}, {"kind": "linear", "cap": 50}, {"kind": "log"}]


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 3),
    multiple=st.integers(1, 3),
    weighting=st.sampled_from(WEIGHTINGS),
    clip=st.sampled_from([None, 0.3]),
    normalization=st.sampled_from(["goal", "weights"]),
    lags=st.lists(st.integers(0, 3), min_size=1, max_size=12),
)
def test_merging_partials_matches_folding_each_update_at_merge_time(
    size: int,
    multiple: int,
    weighting: dict[str, Any],
    clip: float | None,
    normalization: str,
    lags: list[int],
) -> None:
    # partials of `size` updates with K a multiple of it: folding steps exactly where a
    # merge does, at the end of a partial, so the two must agree update by update
    cfg = config(
        aggregation_goal=size * multiple,
        example_weighting=weighting,
        clip_norm=clip,
        normalization=normalization,
        optimizer={"name": "fedavgm", "lr": 0.5, "momentum": 0.9},
    )
    folding = FedBuffAggregator(model(), cfg, version=3)
    merging = FedBuffAggregator(model(), cfg, version=3)
    deltas = updates(len(lags) * size, scale=0.2)
    for p, lag in enumerate(lags):
        builder = PartialBuilder(merging.spec, cfg)
        base = max(0, merging.version - lag)
        folded = []
        for j in range(size):
            i = p * size + j
            builder.add(f"u{i}", deltas[i], 1 + 7 * i, base)
            folded.append(folding.fold(f"u{i}", deltas[i], 1 + 7 * i, base))

        result = merging.merge(builder.seal())

        assert [s for _u, s, _w in result.applied] == [f.staleness for f in folded]
        assert [w for _u, _s, w in result.applied] == pytest.approx([f.weight for f in folded])
        assert (result.step is None) == (folded[-1].step is None)
        assert merging.version == folding.version
        # float32 sums in another order: equal to rounding
        np.testing.assert_allclose(flat(merging.params), flat(folding.params), rtol=1e-5, atol=1e-5)


def test_a_partial_of_one_replica_equals_folding_when_no_step_intervenes() -> None:
    cfg = config(aggregation_goal=4, example_weighting={"kind": "linear", "cap": 10}, clip_norm=0.3)
    deltas = updates(4, scale=0.2)
    folding = FedBuffAggregator(model(), cfg, version=3)
    merging = FedBuffAggregator(model(), cfg, version=3)
    builder = PartialBuilder(merging.spec, cfg)
    for i, d in enumerate(deltas):
        builder.add(f"u{i}", d, 2 + i, i % 3)
        folding.fold(f"u{i}", d, 2 + i, i % 3)

    result = merging.merge(builder.seal())

    assert result.step is not None and result.step.version == 4
    assert sorted(result.step.update_ids) == ["u0", "u1", "u2", "u3"]
    np.testing.assert_allclose(flat(merging.params), flat(folding.params), atol=1e-6)
    weights = {uid: w for uid, _s, w in result.applied}
    assert weights["u0"] == pytest.approx(folding.staleness_weight(3) * 2)


def test_a_partial_that_crosses_k_makes_one_version_averaged_over_all_its_updates() -> None:
    cfg = config(aggregation_goal=3, optimizer={"name": "fedavg", "lr": 1.0})
    merging = FedBuffAggregator(model(), cfg)
    builder = PartialBuilder(merging.spec, cfg)
    deltas = updates(5)
    for i, d in enumerate(deltas):
        builder.add(f"u{i}", d, 1, 0)

    result = merging.merge(builder.seal())

    assert result.step is not None and result.step.num_updates == 5
    mean = np.mean([flat(d) for d in deltas], axis=0)
    np.testing.assert_allclose(flat(merging.params), flat(model()) + mean, atol=1e-6)
    assert merging.buffered == 0


def test_the_builder_refuses_bad_updates_and_changes_nothing() -> None:
    cfg = config(max_update_norm=1.0)
    builder = PartialBuilder(FedBuffAggregator(model(), cfg).spec, cfg)
    good = updates(1)[0]
    builder.add("a", good, 5, 0)

    with pytest.raises(UpdateRejected) as dup:
        builder.add("a", good, 5, 0)
    with pytest.raises(UpdateRejected) as shape:
        builder.add("b", [np.zeros(2, np.float32), *good[1:]], 5, 0)
    with pytest.raises(UpdateRejected) as nan:
        builder.add("c", [np.full_like(good[0], np.nan), *good[1:]], 5, 0)

    assert (dup.value.code, shape.value.code, nan.value.code) == (
        "duplicate_update",
        "shape_mismatch",
        "non_finite",
    )
    sealed = builder.seal()
    assert sealed.ids == ["a"] and sealed.count == 1
    np.testing.assert_array_equal(sealed.groups[0].total, flat(good))


def test_a_sync_leader_takes_its_round_and_drops_other_rounds() -> None:
    cfg = config(mode="sync", aggregation_goal=2)
    agg = SyncRoundAggregator(model(), cfg)
    agg.start_round(now=0.0)
    builder = PartialBuilder(agg.spec, cfg)
    deltas = updates(3)
    builder.add("late", deltas[0], 1, 0, round_id=agg.round_id - 1)
    builder.add("a", deltas[1], 1, 0, round_id=agg.round_id)
    builder.add("b", deltas[2], 1, 0, round_id=agg.round_id)

    result = agg.merge(builder.seal(), now=1.0)

    assert [uid for uid, _s, _w in result.applied] == ["a", "b"]
    assert result.dropped == ["late"] and result.drop_reason == "round_closed"
    assert result.step is not None and agg.current_round is None
