"""The noise is calibrated to what one device can do: brute force against the bound."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import AggregationConfig, FedBuffAggregator, sensitivity
from server.errors import ConfigError

WEIGHTING = st.sampled_from(["equal", "linear", "sqrt", "log"])
STALENESS = st.sampled_from(
    [{"kind": "polynomial"}, {"kind": "constant"}, {"kind": "hinge"}, {"kind": "nvflare"}]
)


def aggregator(goal: int, normalization: str, weighting: str, cap: int, staleness: Any) -> Any:
    config = AggregationConfig.from_dict(
        {
            "aggregation_goal": goal,
            "normalization": normalization,
            "example_weighting": {"kind": weighting, "cap": cap},
            "staleness": staleness,
            "clip_norm": 1.0,
            "max_staleness": None,
        }
    )
    return FedBuffAggregator([np.zeros(3, np.float32)], config), config


def run(agg: Any, updates: list[tuple[np.ndarray, int, int]]) -> np.ndarray:
    """Fold (delta, examples, staleness) updates; returns the step's pseudo-gradient."""
    for i, (delta, examples, stale) in enumerate(updates):
        agg._version = stale  # base 0 at this version: staleness ``stale``
        agg.fold(f"u{i}", [delta], examples, 0)
    return np.asarray(agg.params[0], np.float64).copy()


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 6),
    normalization=st.sampled_from(["goal", "weights"]),
    weighting=WEIGHTING,
    cap=st.integers(1, 500),
    staleness=STALENESS,
    data=st.data(),
)
def test_one_device_moves_a_version_by_at_most_its_sensitivity(
    n: int, normalization: str, weighting: str, cap: int, staleness: Any, data: Any
) -> None:
    vectors = st.lists(st.floats(-3, 3), min_size=3, max_size=3).map(
        lambda v: np.asarray(v, np.float32)
    )
    updates = [
        (data.draw(vectors), data.draw(st.integers(1, 1000)), data.draw(st.integers(0, 50)))
        for _ in range(n)
    ]
    with_u, config = aggregator(n, normalization, weighting, cap, staleness)
    if normalization == "goal":  # zero-out: device u's slot contributes a zero update
        without, _ = aggregator(n, normalization, weighting, cap, staleness)
        others = [(np.zeros(3, np.float32), *updates[0][1:]), *updates[1:]]
    else:  # zero-out: its slot carries no weight at all
        without, _ = aggregator(n - 1, normalization, weighting, cap, staleness)
        others = updates[1:]

    moved = np.linalg.norm(run(with_u, updates) - run(without, others))

    assert moved <= sensitivity(config, n) * (1 + 1e-5) + 1e-6


def test_the_goal_bound_is_reached_by_a_clipped_update_at_the_largest_weight() -> None:
    agg, config = aggregator(4, "goal", "linear", 100, {"kind": "constant"})
    big = np.asarray([50.0, 0, 0], np.float32)  # clipped to norm 1
    updates = [(big, 100, 0)] + [(np.zeros(3, np.float32), 1, 0)] * 3

    moved = np.linalg.norm(run(agg, updates))

    assert moved == pytest.approx(sensitivity(config, 4), rel=1e-5)  # C * cap / K = 25


@pytest.mark.parametrize("kind", ["linear", "sqrt", "log"])
def test_noise_with_unbounded_example_weights_is_refused(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"needs example_weighting\.cap"):
        AggregationConfig.from_dict(
            {"clip_norm": 1.0, "noise_multiplier": 1.0, "example_weighting": {"kind": kind}}
        )


@pytest.mark.parametrize(
    ("normalization", "weighting"), [("goal", "equal"), ("goal", "linear"), ("weights", "sqrt")]
)
def test_the_noise_std_is_the_noise_multiplier_times_the_sensitivity(
    normalization: str, weighting: str
) -> None:
    config = AggregationConfig.from_dict(
        {
            "aggregation_goal": 4,
            "normalization": normalization,
            "example_weighting": {"kind": weighting, "cap": 50},
            "clip_norm": 2.0,
            "noise_multiplier": 0.5,
        }
    )
    agg = FedBuffAggregator([np.zeros(40_000, np.float32)], config)
    for i in range(4):
        agg.fold(f"u{i}", [np.zeros(40_000, np.float32)], 7, 0)

    expected = 0.5 * sensitivity(config, 4)
    assert agg.noise_std(4) == pytest.approx(expected)
    assert float(np.std(agg.params[0])) == pytest.approx(expected, rel=0.03)


def test_linear_weights_calibrate_to_the_cap_not_to_c_over_k() -> None:
    config = AggregationConfig.from_dict(
        {
            "aggregation_goal": 10,
            "example_weighting": {"kind": "linear", "cap": 1000},
            "clip_norm": 1.0,
            "noise_multiplier": 1.0,
        }
    )

    assert sensitivity(config, 10) == pytest.approx(1000 * 1.0 / 10)
