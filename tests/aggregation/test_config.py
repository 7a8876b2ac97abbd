from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import (
    AggregationConfig,
    ExampleWeightingConfig,
    OptimizerConfig,
    StalenessConfig,
)
from server.errors import ConfigError

positive = st.floats(min_value=1e-6, max_value=1e6)
unit_open = st.floats(min_value=0.0, max_value=0.999)

staleness = st.one_of(
    st.builds(lambda e: {"kind": "polynomial", "exponent": e}, st.floats(0, 4)),
    st.just({"kind": "constant"}),
    st.just({"kind": "nvflare"}),
    st.builds(
        lambda a, b: {"kind": "hinge", "a": a, "b": b}, st.floats(0, 100), st.integers(0, 50)
    ),
)
optimizer = st.one_of(
    st.builds(lambda lr: {"name": "fedavg", "lr": lr}, positive),
    st.builds(lambda lr, m: {"name": "fedavgm", "lr": lr, "momentum": m}, positive, unit_open),
    st.builds(
        lambda name, lr, b1, b2, tau: {
            "name": name,
            "lr": lr,
            "beta1": b1,
            "beta2": b2,
            "tau": tau,
        },
        st.sampled_from(["fedadam", "fedyogi", "fedadagrad"]),
        positive,
        unit_open,
        unit_open,
        positive,
    ),
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["async", "sync"]),
        "aggregation_goal": st.integers(1, 1000),
        "normalization": st.sampled_from(["goal", "weights"]),
        "staleness": staleness,
        "max_staleness": st.none() | st.integers(0, 1000),
        "example_weighting": st.fixed_dictionaries(
            {"kind": st.sampled_from(["equal", "linear", "sqrt", "log"])},
            optional={"cap": st.none() | st.integers(1, 10**6)},
        ),
        "optimizer": optimizer,
        "max_update_norm": st.none() | positive,
        "seed": st.integers(0, 2**63 - 1),
        "dedup_window": st.integers(0, 10**6),
        "over_selection": st.floats(0, 5),
        "round_timeout_s": positive,
        "min_round_fraction": st.floats(0, 1),
    },
)


def test_defaults_are_fedbuff_with_fedavg() -> None:
    config = AggregationConfig.from_dict({})

    assert config.mode == "async"
    assert config.aggregation_goal == 10
    assert config.normalization == "goal"
    assert config.staleness == StalenessConfig("polynomial", exponent=0.5)
    assert config.max_staleness == 100
    assert config.example_weighting == ExampleWeightingConfig("equal", None)
    assert config.optimizer.to_dict() == {"name": "fedavg", "lr": 1.0}
    assert config.noise_multiplier == 0.0
    assert (config.over_selection, config.round_timeout_s, config.min_round_fraction) == (
        0.3,
        240.0,
        0.0,
    )


@settings(max_examples=150, deadline=None)
@given(data=configs)
def test_from_dict_to_dict_round_trips_through_json(data: dict[str, Any]) -> None:
    config = AggregationConfig.from_dict(data)

    dumped = json.loads(json.dumps(config.to_dict()))

    assert AggregationConfig.from_dict(dumped) == config
    assert dumped == config.to_dict()


def test_to_dict_lists_only_the_parameters_of_the_chosen_variant() -> None:
    config = AggregationConfig.from_dict(
        {"staleness": {"kind": "hinge", "a": 2, "b": 3}, "optimizer": {"name": "fedyogi"}}
    )

    assert config.to_dict()["staleness"] == {"kind": "hinge", "a": 2.0, "b": 3}
    assert config.to_dict()["optimizer"] == {
        "name": "fedyogi",
        "lr": 0.01,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-3,
    }


def test_integers_given_for_float_fields_are_stored_as_floats() -> None:
    config = AggregationConfig.from_dict({"clip_norm": 1, "optimizer": {"name": "fedavg", "lr": 2}})

    assert isinstance(config.clip_norm, float)
    assert isinstance(config.optimizer.lr, float)


def test_optimizer_of_fills_in_the_defaults_of_that_optimizer() -> None:
    assert OptimizerConfig.of("fedavgm", lr=0.7).to_dict() == {
        "name": "fedavgm",
        "lr": 0.7,
        "momentum": 0.9,
    }


@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        ({"bogus": 1}, "bogus"),
        ({"mode": "semi"}, "mode"),
        ({"aggregation_goal": 0}, "aggregation_goal"),
        ({"aggregation_goal": 2.5}, "aggregation_goal"),
        ({"aggregation_goal": True}, "aggregation_goal"),
        ({"normalization": "mean"}, "normalization"),
        ({"staleness": {"kind": "exponential"}}, "staleness.kind"),
        ({"staleness": {"kind": "constant", "exponent": 1}}, "exponent"),
        ({"staleness": {"kind": "polynomial", "exponent": -1}}, "staleness.exponent"),
        ({"staleness": {"kind": "hinge", "b": 1.5}}, "staleness.b"),
        ({"staleness": "polynomial"}, "staleness"),
        ({"max_staleness": -1}, "max_staleness"),
        ({"example_weighting": {"kind": "cube"}}, "example_weighting.kind"),
        ({"example_weighting": {"kind": "linear", "cap": 0}}, "example_weighting.cap"),
        ({"optimizer": {"name": "sgd"}}, "optimizer.name"),
        ({"optimizer": {"name": "fedavg", "momentum": 0.9}}, "momentum"),
        ({"optimizer": {"name": "fedavg", "lr": 0}}, "optimizer.lr"),
        ({"optimizer": {"name": "fedadam", "beta1": 1.0}}, "optimizer.beta1"),
        ({"optimizer": {"name": "fedyogi", "tau": 0}}, "optimizer.tau"),
        ({"clip_norm": 0}, "clip_norm"),
        ({"clip_norm": float("nan")}, "clip_norm"),
        ({"noise_multiplier": 1.0}, "requires clip_norm"),
        ({"noise_multiplier": -1.0, "clip_norm": 1.0}, "noise_multiplier"),
        ({"max_update_norm": -3}, "max_update_norm"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"dedup_window": -1}, "dedup_window"),
        ({"over_selection": -0.1}, "over_selection"),
        ({"round_timeout_s": 0}, "round_timeout_s"),
        ({"min_round_fraction": 1.5}, "min_round_fraction"),
        ({"min_round_fraction": "half"}, "min_round_fraction"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(data: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions) as info:
        AggregationConfig.from_dict(data)

    assert info.value.code == "invalid_config"


def test_constructing_the_dataclass_directly_runs_the_same_checks() -> None:
    with pytest.raises(ConfigError, match="aggregation_goal"):
        AggregationConfig(aggregation_goal=0)


def test_nested_configs_may_be_passed_as_objects() -> None:
    config = AggregationConfig.from_dict({"optimizer": OptimizerConfig.of("fedadagrad")})

    assert config.optimizer.name == "fedadagrad"
