"""Lazy shards: deterministic per device, label-skewed, tier-correlated, any fleet size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from server.modeling.datasets import load_dataset
from simulator import rand
from simulator.environment import make_shards
from simulator.errors import PresetError
from simulator.fleet import Fleet
from simulator.shards import LabelSkewShards, tier_class_priors
from simulator.streams import DeviceStreams, seed_sequence_words
from simulator.synthetic import SyntheticShards
from tests.simulator.support import tiny_preset


def _digits(*overrides: str) -> LabelSkewShards:
    return _digits_and_fleet(*overrides)[0]


def _digits_and_fleet(*overrides: str) -> tuple[LabelSkewShards, Fleet]:
    preset = tiny_preset(*overrides)
    fleet = Fleet(preset.fleet, preset.seed)
    shards = make_shards(preset, fleet)
    assert isinstance(shards, LabelSkewShards)
    return shards, fleet


def test_a_device_always_gets_the_same_shard_even_after_eviction() -> None:
    shards = _digits()
    first = shards.shard(7)
    for device in range(300):
        shards.shard(device)
    shards._cache.capacity = 1
    shards.shard(8)

    again = shards.shard(7)

    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert len(first[0]) == shards.sizes[7]
    assert first[0].dtype == np.float32 and first[1].dtype == np.int64


def test_small_alpha_concentrates_each_device_on_few_classes() -> None:
    skewed, flat = _digits("data.alpha=0.05"), _digits("data.alpha=100")

    def classes_per_device(shards: LabelSkewShards) -> float:
        mixes = np.array([shards.class_mix(d) for d in range(200)])
        return float(np.mean((mixes > 0.05).sum(axis=1)))

    assert classes_per_device(skewed) < 3 < 9 < classes_per_device(flat)


def test_tier_correlation_gives_each_tier_its_own_classes() -> None:
    priors = tier_class_priors(3, 10, 1.0)
    assert np.allclose(priors.sum(axis=1), 1.0)
    assert priors[0, 0] > 0 and priors[0, 1] == 0 and priors[1, 1] > 0
    assert np.allclose(tier_class_priors(3, 10, 0.0), 0.1)

    shards, fleet = _digits_and_fleet("data.tier_correlation=1.0", "data.alpha=1.0")
    labels = {
        t: np.concatenate([shards.shard(int(d))[1] for d in fleet.members(t)[:40]]) for t in (0, 1)
    }

    assert np.isin(labels[0], [0, 2, 4, 6, 8]).mean() > 0.95
    assert np.isin(labels[1], [1, 3, 5, 7, 9]).mean() > 0.95


def test_the_tier_test_set_follows_the_tier_data() -> None:
    shards, fleet = _digits_and_fleet("data.tier_correlation=1.0", "data.alpha=1.0")

    _, y = shards.tier_test_set(fleet.members(1)[:20])

    assert len(y) == 20 * 10
    assert np.isin(y, [1, 3, 5, 7, 9]).all()
    _, _, _, y_test = load_dataset("digits")
    assert np.array_equal(shards.test_set()[1], y_test)


def test_synthetic_shards_are_deterministic_and_non_iid() -> None:
    preset = tiny_preset("data.dataset='synthetic'", "data.alpha=1.0", "data.beta=1.0")
    fleet = Fleet(preset.fleet, preset.seed)
    shards = SyntheticShards(preset.data, fleet.tier, 2, seed=0)

    x0, y0 = shards.shard(0)
    x1, y1 = shards.shard(1)

    assert x0.shape == (shards.sizes[0], 60) and x0.dtype == np.float32
    assert np.array_equal(SyntheticShards(preset.data, fleet.tier, 2, seed=0).shard(0)[0], x0)
    assert abs(float(x0.mean()) - float(x1.mean())) > 0.05
    assert set(np.unique(np.concatenate([y0, y1]))) <= set(range(10))
    x_test, _ = shards.test_set()
    assert len(x_test) == preset.data.eval_devices * preset.data.eval_examples


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_a_100k_device_fleet_needs_no_per_device_data_up_front(dataset: str) -> None:
    preset = tiny_preset("fleet.devices=100000", f"data.dataset='{dataset}'")
    tracemalloc.start()
    fleet = Fleet(preset.fleet, preset.seed)
    shards = make_shards(preset, fleet)
    x, _ = shards.shard(99_999)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(shards.sizes) == 100_000 and len(x) == shards.sizes[99_999]
    assert peak < 40_000_000


def test_synthetic_iid_shares_one_labelling_model_across_devices() -> None:
    preset = tiny_preset("data.dataset='synthetic'", "data.iid=true", "data.beta=0.5")
    fleet = Fleet(preset.fleet, preset.seed)
    shards = SyntheticShards(preset.data, fleet.tier, 2, seed=0)

    w0, b0, v0 = shards._model(0)
    w1, b1, v1 = shards._model(1)

    assert np.array_equal(w0, w1) and np.array_equal(b0, b1)
    assert not np.array_equal(v0, v1)


def _disjoint(*overrides: str) -> LabelSkewShards:
    return _digits("data.partition='disjoint'", "fleet.devices=80", *overrides)


def test_a_disjoint_partition_puts_no_example_on_two_devices_or_twice() -> None:
    shards = _disjoint()
    parts = shards.partition
    assert parts is not None

    taken = np.concatenate(parts)

    assert len(taken) == int(shards.sizes.sum())
    assert len(np.unique(taken)) == len(taken)
    assert [len(p) for p in parts] == shards.sizes.tolist()


def test_a_disjoint_shard_is_the_pool_rows_it_was_given_and_keeps_the_label_skew() -> None:
    shards = _disjoint("data.alpha=0.1")
    x_pool, y_pool = shards._train.x, shards._train.y
    assert shards.partition is not None

    x, y = shards.shard(3)
    idx = shards.partition[3]

    assert np.array_equal(x, x_pool[idx]) and np.array_equal(y, y_pool[idx])
    # Dirichlet(0.1): most devices hold one or two classes
    top = [np.bincount(shards.shard(d)[1]).max() / len(shards.shard(d)[1]) for d in range(80)]
    assert np.median(top) > 0.6


def test_a_disjoint_partition_that_does_not_fit_the_pool_is_refused_with_its_key() -> None:
    with pytest.raises(PresetError, match=r"data.partition = 'disjoint': the 300 shards take"):
        _digits("data.partition='disjoint'", "data.size_median=30", "data.min_size=20")


def test_draws_let_more_devices_share_the_pool_than_it_has_examples() -> None:
    shards = _digits("fleet.devices=3000")

    assert shards.partition is None
    assert int(shards.sizes.sum()) > len(shards._train.y)


@pytest.mark.parametrize("seed", [0, 3, 2**40 + 7])
def test_device_streams_are_the_generators_default_rng_gives(seed: int) -> None:
    streams = DeviceStreams(seed, 2000)

    for device in [0, 1, 2, 999, 1999]:
        want = np.random.default_rng(rand.key_seed(seed, device))
        got = streams.rng(device)
        assert got.bit_generator.state == want.bit_generator.state
        assert np.array_equal(got.random(5), want.random(5))
        assert np.array_equal(got.dirichlet([0.5] * 4), want.dirichlet([0.5] * 4))


def test_seed_sequence_words_match_numpy_at_the_edges_of_64_bits() -> None:
    keys = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15]

    words = seed_sequence_words(np.asarray(keys, dtype=np.uint64))

    for i, key in enumerate(keys):
        want = np.random.SeedSequence(key).generate_state(4, np.uint64)
        assert [int(w[i]) for w in words] == want.tolist()


def test_shards_are_drawn_as_from_a_generator_per_device() -> None:
    shards = _digits()

    for device in [0, 5, 17]:
        # the definition the streams reproduce: one default_rng per device
        rng = np.random.default_rng(rand.key_seed(shards.seed, device))
        mix = rng.dirichlet(np.maximum(shards._concentration[shards._tiers[device]], 1e-3))
        counts = rng.multinomial(int(shards.sizes[device]), mix)
        idx = shards._train.draw(np.repeat(np.arange(len(counts)), counts), rng)
        x, y = shards.shard(device)
        assert np.array_equal(x, shards._train.x[idx]) and np.array_equal(y, shards._train.y[idx])
