from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import (
    FedBuffAggregator,
    RejectReason,
    make_aggregator,
    make_optimizer,
)
from server.errors import ConfigError, UpdateRejected
from tests.aggregation.support import config, fedbuff, flat, model, sync, updates


def test_k1_zero_staleness_fedavg_lr1_applies_the_update_exactly() -> None:
    params, (delta,) = model(), updates(1)
    agg = FedBuffAggregator(params, config(aggregation_goal=1))

    result = agg.fold("u", delta, 10, 0)

    assert result.step is not None
    assert result.step.version == agg.version == 1
    for got, p, d in zip(agg.params, params, delta, strict=True):
        assert got.dtype == np.float32
        assert np.array_equal(got, p + d)


@settings(max_examples=30, deadline=None)
@given(
    cohort=st.integers(1, 8),
    counts=st.lists(st.integers(1, 500), min_size=8, max_size=8),
    weighting=st.sampled_from(["equal", "linear", "sqrt", "log"]),
    normalization=st.sampled_from(["goal", "weights"]),
)
def test_fedbuff_with_k_equal_cohort_and_zero_staleness_equals_a_sync_round(
    cohort: int, counts: list[int], weighting: str, normalization: str
) -> None:
    kwargs = {
        "aggregation_goal": cohort,
        "normalization": normalization,
        "example_weighting": {"kind": weighting},
        "optimizer": {"name": "fedavgm", "lr": 0.7},
    }
    deltas = updates(cohort)
    buffered = fedbuff(**kwargs)
    rounds = sync(**kwargs)
    rounds.start_round(now=0.0)

    for i, (delta, n) in enumerate(zip(deltas, counts, strict=False)):
        buffered.fold(f"u{i}", delta, n, 0)
        rounds.fold(f"u{i}", delta, n, 0, now=1.0)

    assert buffered.version == rounds.version == 1
    assert flat(buffered.params).tobytes() == flat(rounds.params).tobytes()


def test_a_full_buffer_applies_the_fedavg_mean_of_its_updates() -> None:
    params, deltas = model(), updates(4)
    agg = FedBuffAggregator(params, config(aggregation_goal=4, optimizer={"lr": 0.5}))

    for i, d in enumerate(deltas):
        agg.fold(f"u{i}", d, 10, 0)

    expected = flat(params) + 0.5 * np.mean([flat(d) for d in deltas], axis=0)
    np.testing.assert_allclose(flat(agg.params), expected, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    order=st.permutations(range(6)),
    stale=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    counts=st.lists(st.integers(1, 1000), min_size=6, max_size=6),
)
def test_buffer_result_does_not_depend_on_update_order(
    order: list[int], stale: list[int], counts: list[int]
) -> None:
    deltas = updates(6)
    kwargs = {"aggregation_goal": 6, "example_weighting": {"kind": "sqrt"}}
    results = []

    for sequence in (range(6), order):
        agg = FedBuffAggregator(model(), config(**kwargs), version=3)
        for i in sequence:
            agg.fold(f"u{i}", deltas[i], counts[i], 3 - stale[i])
        results.append(flat(agg.params))

    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)


def test_stale_updates_are_weighted_and_divided_by_k() -> None:
    params, (delta,) = model(), updates(1)
    agg = FedBuffAggregator(params, config(aggregation_goal=1), version=3)

    result = agg.fold("u", delta, 10, 0)

    assert (result.staleness, result.weight) == (3, pytest.approx(0.5))
    np.testing.assert_allclose(flat(agg.params), flat(params) + 0.5 * flat(delta), rtol=1e-6)


def test_weights_normalization_divides_by_the_sum_of_weights() -> None:
    params, deltas = model(), updates(2)
    agg = FedBuffAggregator(
        params,
        config(aggregation_goal=2, normalization="weights", example_weighting={"kind": "linear"}),
    )

    agg.fold("a", deltas[0], 30, 0)
    agg.fold("b", deltas[1], 10, 0)

    expected = flat(params) + (30 * flat(deltas[0]) + 10 * flat(deltas[1])) / 40
    np.testing.assert_allclose(flat(agg.params), expected, rtol=1e-6, atol=1e-7)


def test_step_result_names_the_version_and_the_updates_it_consumed() -> None:
    agg = fedbuff(aggregation_goal=3)
    deltas = updates(3)

    results = [agg.fold(f"u{i}", d, 5, 0) for i, d in enumerate(deltas)]

    assert [r.step for r in results[:2]] == [None, None]
    step = results[2].step
    assert step is not None
    assert (step.version, step.num_updates, step.update_ids) == (1, 3, ("u0", "u1", "u2"))
    mean = np.mean([flat(d) for d in deltas], axis=0)
    assert step.pseudo_grad_norm == pytest.approx(float(np.linalg.norm(mean)), rel=1e-5)
    assert agg.buffered == 0


def test_clipping_bounds_each_update_and_is_recorded() -> None:
    params, deltas = model(), updates(2, scale=10.0)
    agg = FedBuffAggregator(params, config(aggregation_goal=2, clip_norm=1.0))

    first = agg.fold("a", deltas[0], 5, 0)
    agg.fold("b", deltas[1], 5, 0)

    assert first.clipped
    assert first.norm > 1.0
    assert agg.stats.clipped == 2
    clipped = [flat(d) / np.linalg.norm(flat(d)) for d in deltas]
    np.testing.assert_allclose(flat(agg.params), flat(params) + np.mean(clipped, axis=0), atol=1e-6)


def test_has_folded_covers_the_buffer_and_a_bounded_window_of_consumed_ids() -> None:
    agg = fedbuff(aggregation_goal=2, dedup_window=3)

    for i, d in enumerate(updates(5)):
        agg.fold(f"u{i}", d, 5, agg.version)

    assert agg.pending_ids == ("u4",)
    assert [agg.has_folded(f"u{i}") for i in range(5)] == [False, True, True, True, True]


def test_updates_beyond_max_staleness_are_refused() -> None:
    agg = FedBuffAggregator(model(), config(max_staleness=2), version=5)

    agg.fold("ok", updates(1)[0], 5, 3)
    with pytest.raises(UpdateRejected) as info:
        agg.fold("old", updates(1)[0], 5, 2)

    assert info.value.code == RejectReason.TOO_STALE


def test_stats_count_folds_steps_staleness_and_rejections() -> None:
    agg = FedBuffAggregator(model(), config(aggregation_goal=2), version=4)
    for i, d in enumerate(updates(3)):
        agg.fold(f"u{i}", d, 5, 2)
    with pytest.raises(UpdateRejected):
        agg.fold("u0", updates(1)[0], 5, 4)

    stats = agg.stats

    assert (stats.folded, stats.steps, stats.staleness_sum) == (3, 1, 2 + 2 + 3)
    assert stats.staleness_mean == pytest.approx(7 / 3)
    assert stats.rejected == {"duplicate_update": 1}


def test_params_handed_out_keep_their_version_after_a_step() -> None:
    agg = fedbuff(aggregation_goal=1)
    before = agg.params
    copy = [p.copy() for p in before]

    agg.fold("u", updates(1)[0], 5, 0)

    assert all(np.array_equal(a, b) for a, b in zip(before, copy, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(agg.params, copy, strict=True))
    assert not before[0].flags.writeable


def test_flat_params_handed_out_keep_their_version_after_a_step() -> None:
    agg = fedbuff(aggregation_goal=1)
    before = agg.flat_params
    copy = before.copy()

    agg.fold("u", updates(1)[0], 5, 0)

    np.testing.assert_array_equal(before, copy)  # the step changed a copy of them
    assert not np.array_equal(agg.flat_params, copy)
    assert not before.flags.writeable
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in agg.params]), agg.flat_params)


def test_aggregator_refuses_a_config_of_the_other_mode() -> None:
    with pytest.raises(ConfigError, match="mode"):
        FedBuffAggregator(model(), config(mode="sync"))


def test_make_aggregator_picks_the_class_for_the_mode() -> None:
    assert type(make_aggregator(model(), config())).__name__ == "FedBuffAggregator"
    assert type(make_aggregator(model(), config(mode="sync"))).__name__ == "SyncRoundAggregator"


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_each_step_hands_the_mean_delta_to_the_server_optimizer(name: str) -> None:
    params, deltas = model(), updates(6)
    agg = FedBuffAggregator(params, config(aggregation_goal=2, optimizer={"name": name}))
    reference = [p.copy() for p in params]
    optimizer = make_optimizer({"name": name})

    for i, d in enumerate(deltas):
        agg.fold(f"u{i}", d, 5, agg.version)
    for a, b in zip(deltas[::2], deltas[1::2], strict=True):
        optimizer.step(reference, [(x + y) / np.float32(2) for x, y in zip(a, b, strict=True)])

    assert agg.version == 3
    np.testing.assert_allclose(flat(agg.params), flat(reference), rtol=1e-5, atol=1e-6)


def test_building_an_aggregator_pins_openblas_to_one_thread() -> None:
    from threadpoolctl import threadpool_info

    fedbuff()

    openblas = [lib for lib in threadpool_info() if lib["internal_api"] == "openblas"]
    assert openblas
    assert all(lib["num_threads"] == 1 for lib in openblas)


def test_the_fold_computes_the_norm_it_clips_by() -> None:
    params, deltas = model(), updates(6, scale=1.0)
    agg = FedBuffAggregator(params, config(aggregation_goal=3, clip_norm=0.5))

    for i, d in enumerate(deltas):
        result = agg.fold(f"u{i}", d, 10, agg.version)
        assert result.norm == pytest.approx(float(np.linalg.norm(flat(d))), rel=1e-5)
        assert result.clipped == (result.norm > 0.5)


def test_the_plain_path_and_the_general_path_agree_bit_for_bit() -> None:
    params, deltas = model(), updates(7)
    plain = FedBuffAggregator(params, config(aggregation_goal=3))
    general = FedBuffAggregator(params, config(aggregation_goal=3))
    for i, d in enumerate(deltas):
        a = plain.fold(f"u{i}", list(d), 10, max(0, plain.version - i % 2))
        b = general.fold(f"u{i}", tuple(d), 10, max(0, general.version - i % 2))  # not a list
        assert (a.staleness, a.weight) == (b.staleness, b.weight)
        assert a.norm == pytest.approx(b.norm, rel=1e-6)
    np.testing.assert_array_equal(flat(plain.params), flat(general.params))
    assert plain.stats == general.stats


def test_the_plain_path_still_refuses_duplicates_and_bad_shapes() -> None:
    agg = FedBuffAggregator(model(), config(aggregation_goal=10))
    good = updates(1)[0]
    agg.fold("a", list(good), 10, 0)

    with pytest.raises(UpdateRejected) as dup:
        agg.fold("a", list(good), 10, 0)
    with pytest.raises(UpdateRejected) as shape:
        agg.fold("b", [np.zeros(3, np.float32), *good[1:]], 10, 0)

    assert dup.value.code == RejectReason.DUPLICATE_UPDATE
    assert shape.value.code == RejectReason.SHAPE_MISMATCH
    assert agg.buffered == 1
