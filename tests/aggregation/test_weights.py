from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import AggregationConfig, StalenessConfig, example_weight, make_staleness_fn

staleness_configs = st.one_of(
    st.builds(lambda e: {"kind": "polynomial", "exponent": e}, st.floats(0, 4)),
    st.just({"kind": "constant"}),
    st.just({"kind": "nvflare"}),
    st.builds(
        lambda a, b: {"kind": "hinge", "a": a, "b": b}, st.floats(0, 100), st.integers(0, 50)
    ),
)


@settings(max_examples=200, deadline=None)
@given(config=staleness_configs, s=st.integers(0, 10_000))
def test_staleness_weight_is_one_at_zero_and_non_increasing(config: dict[str, Any], s: int) -> None:
    weight = make_staleness_fn(config)

    assert weight(0) == 1.0
    assert 0.0 <= weight(s + 1) <= weight(s) <= 1.0


@pytest.mark.parametrize(
    ("config", "s", "expected"),
    [
        ({"kind": "polynomial", "exponent": 0.5}, 3, 0.5),
        ({"kind": "polynomial", "exponent": 1.0}, 4, 0.2),
        ({"kind": "constant"}, 50, 1.0),
        ({"kind": "nvflare"}, 4, 1.0 / 3.0),
        ({"kind": "hinge", "a": 10.0, "b": 4}, 4, 1.0),
        ({"kind": "hinge", "a": 10.0, "b": 4}, 6, 1.0 / 21.0),
    ],
)
def test_staleness_rules_follow_their_formulas(
    config: dict[str, Any], s: int, expected: float
) -> None:
    assert make_staleness_fn(config)(s) == pytest.approx(expected, rel=1e-12)


def test_staleness_fn_accepts_a_config_object_or_a_whole_aggregation_config() -> None:
    fedbuff = 1 / math.sqrt(1 + 8)

    assert make_staleness_fn(StalenessConfig())(8) == pytest.approx(fedbuff)
    assert make_staleness_fn(AggregationConfig())(8) == pytest.approx(fedbuff)


def test_negative_staleness_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="staleness"):
        make_staleness_fn({"kind": "constant"})(-1)


@pytest.mark.parametrize(
    ("kind", "n", "cap", "expected"),
    [
        ("equal", 500, None, 1.0),
        ("linear", 500, None, 500.0),
        ("linear", 500, 100, 100.0),
        ("sqrt", 400, None, 20.0),
        ("sqrt", 400, 100, 10.0),
        ("log", 99, None, 2.0),
        ("log", 10**6, 999, 3.0),
    ],
)
def test_example_weights_follow_their_formulas_after_capping(
    kind: str, n: int, cap: int | None, expected: float
) -> None:
    assert example_weight(n, kind, cap) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["equal", "linear", "sqrt", "log"]),
    n=st.integers(1, 10**7),
    cap=st.none() | st.integers(1, 10**5),
)
def test_example_weights_are_positive_and_non_decreasing(
    kind: str, n: int, cap: int | None
) -> None:
    assert 0 < example_weight(n, kind, cap) <= example_weight(n + 1, kind, cap)


def test_example_weight_refuses_fewer_than_one_example_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="num_examples"):
        example_weight(0, "linear")
    with pytest.raises(ValueError, match="cube"):
        example_weight(3, "cube")
