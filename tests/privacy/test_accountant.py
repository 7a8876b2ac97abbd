"""Epsilon is the library's: the same event sequence composed by hand gives the same."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import ConfigError
from server.privacy import Accountant, PrivacyConfig, calibrate_noise_multiplier
from server.tasks.config import TaskConfig

RELATION = dp_accounting.NeighboringRelation.REPLACE_SPECIAL


def library_epsilon(z: float, compositions: int, delta: float) -> float:
    accountant = rdp.RdpAccountant(neighboring_relation=RELATION)
    accountant.compose(dp_accounting.GaussianDpEvent(z), compositions)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("z", "versions", "separation"), [(1.0, 1, 1), (2.0, 50, 5), (5, 300, 3)])
def test_epsilon_equals_the_librarys_for_one_update_per_version(
    z: float, versions: int, separation: int
) -> None:
    accountant = Accountant(z, 1e-5, min_separation=separation, max_staleness=separation - 1)

    assert accountant.per_version == 1
    assert accountant.epsilon(versions) == library_epsilon(
        z, math.ceil(versions / separation), 1e-5
    )


def test_several_updates_in_one_version_count_as_one_gaussian_of_z_over_m() -> None:
    accountant = Accountant(3.0, 1e-5, min_separation=2, max_staleness=4)  # m = 3
    lib = rdp.RdpAccountant(neighboring_relation=RELATION)
    lib.compose(dp_accounting.GaussianDpEvent(1.0), 3)  # k = 10: 3 full versions of 3
    lib.compose(dp_accounting.GaussianDpEvent(3.0))  # and one of 1

    assert accountant.per_version == 3
    assert accountant.epsilon(20) == float(lib.get_epsilon(1e-5))


@settings(max_examples=30, deadline=None)
@given(z=st.floats(0.5, 20), separation=st.integers(1, 5), versions=st.integers(0, 400))
def test_epsilon_never_decreases_and_max_versions_is_the_last_within_budget(
    z: float, separation: int, versions: int
) -> None:
    accountant = Accountant(z, 1e-5, min_separation=separation)
    target = accountant.epsilon(max(versions, 1))

    limit = accountant.max_versions(target)

    assert accountant.epsilon(versions) <= accountant.epsilon(versions + 1)
    assert accountant.epsilon(limit) <= target < accountant.epsilon(limit + 1)


def test_auto_calibration_meets_the_budget_for_the_planned_versions() -> None:
    z = calibrate_noise_multiplier(4.0, 1e-5, 100, min_separation=4, max_staleness=3)
    config = TaskConfig.from_dict(
        {
            "aggregation": {"clip_norm": 1.0, "max_staleness": 3},
            "privacy": {"target_epsilon": 4.0, "planned_versions": 100, "min_separation": 4},
        }
    )
    budget = config.budget
    assert budget is not None

    assert budget.noise_multiplier == pytest.approx(z, rel=1e-3)
    assert config.aggregation.noise_multiplier == budget.noise_multiplier
    assert budget.epsilon(100) <= 4.0 and budget.max_versions >= 100
    assert TaskConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("aggregation", "privacy", "message"),
    [
        ({"max_staleness": 3}, {"noise_multiplier": 1.0}, "clip_norm"),
        ({"clip_norm": 1.0, "max_staleness": None}, {"noise_multiplier": 1.0}, "max_staleness"),
        ({"clip_norm": 1.0}, {"noise_multiplier": "auto"}, "planned_versions"),
        ({"clip_norm": 1.0, "noise_multiplier": 3.0}, {"noise_multiplier": 9.0}, "disagrees"),
        ({"clip_norm": 1.0}, {"noise_multiplier": 0.1}, "one version already costs"),
    ],
)
def test_configs_the_accounting_cannot_stand_behind_are_refused(
    aggregation: dict[str, object], privacy: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskConfig.from_dict(
            {"aggregation": aggregation, "privacy": {"target_epsilon": 2.0, **privacy}}
        )


def test_privacy_config_round_trips_and_names_unknown_keys() -> None:
    config = PrivacyConfig(target_epsilon=1.0, noise_multiplier=2.0)

    assert PrivacyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown key"):
        PrivacyConfig.from_dict({"target_epsilon": 1.0, "epsilon": 2})
