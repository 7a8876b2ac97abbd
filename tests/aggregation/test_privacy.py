from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from server.aggregation import FedBuffAggregator, clip_by_norm
from tests.aggregation.support import config, flat, model, updates

finite = st.floats(-1e6, 1e6, width=32)


@settings(max_examples=100, deadline=None)
@given(
    tensor=hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=6), elements=finite),
    clip=st.floats(1e-3, 1e4),
)
def test_clipping_never_increases_a_norm(tensor: np.ndarray, clip: float) -> None:
    before = tensor.copy()

    norm, scale, clipped = clip_by_norm([tensor], clip)

    assert 0.0 <= scale <= 1.0
    assert np.linalg.norm((tensor.astype(np.float64) * scale).ravel()) <= norm * (1 + 1e-12)
    assert np.linalg.norm((tensor.astype(np.float64) * scale).ravel()) <= clip * (1 + 1e-9)
    assert clipped == (norm > clip)
    assert np.array_equal(tensor, before)


def test_clip_by_norm_reports_scale_c_over_norm() -> None:
    norm, scale, clipped = clip_by_norm([np.array([3.0, 4.0], np.float32)], 1.0)

    assert (norm, scale, clipped) == (5.0, pytest.approx(0.2), True)


def noisy(seed: int) -> FedBuffAggregator:
    return FedBuffAggregator(
        model(), config(aggregation_goal=2, clip_norm=1.0, noise_multiplier=1.0, seed=seed)
    )


def test_noise_is_seeded_and_has_std_z_c_over_k() -> None:
    a, b, other = noisy(5), noisy(5), noisy(6)
    zero = [np.zeros_like(p) for p in model()]

    for agg in (a, b, other):
        agg.fold("x", zero, 5, 0)
        agg.fold("y", zero, 5, 0)

    moved = flat(a.params) - flat(model())
    assert flat(a.params).tobytes() == flat(b.params).tobytes()
    assert flat(a.params).tobytes() != flat(other.params).tobytes()
    assert 0.2 < float(np.std(moved)) < 1.0  # std z*C/K = 0.5 over 25 draws


def test_noise_std_is_exactly_z_c_over_k_on_a_large_model() -> None:
    params = [np.zeros(20_000, np.float32)]
    agg = FedBuffAggregator(
        params, config(aggregation_goal=4, clip_norm=2.0, noise_multiplier=0.5, seed=1)
    )
    for i in range(4):
        agg.fold(f"u{i}", [np.zeros(20_000, np.float32)], 5, 0)

    assert float(np.std(agg.params[0])) == pytest.approx(0.25, rel=0.03)


def test_without_noise_the_step_is_deterministic_and_noise_free() -> None:
    deltas = updates(2)
    agg = FedBuffAggregator(model(), config(aggregation_goal=2, clip_norm=100.0))

    for i, d in enumerate(deltas):
        agg.fold(f"u{i}", d, 5, 0)

    expected = flat(model()) + np.mean([flat(d) for d in deltas], axis=0)
    np.testing.assert_allclose(flat(agg.params), expected, rtol=1e-6, atol=1e-7)
