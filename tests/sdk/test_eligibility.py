"""Eligibility: a policy over the device state; unknown never counts as eligible."""

from __future__ import annotations

import pytest

from client_sdk import ConfigError, DeviceState, EligibilityPolicy, ManualDeviceState


def test_the_default_policy_wants_charging_unmetered_idle_and_battery() -> None:
    policy = EligibilityPolicy()

    assert policy.reasons(DeviceState(True, True, True, 0.5)) == ()
    assert policy.reasons(DeviceState(False, False, False, 0.1)) == (
        "not_charging",
        "metered_network",
        "not_idle",
        "battery_low",
    )


def test_an_unknown_state_is_not_eligible() -> None:
    assert EligibilityPolicy().reasons(DeviceState()) == (
        "charging_unknown",
        "network_unknown",
        "idle_unknown",
        "battery_unknown",
    )


def test_always_requires_nothing() -> None:
    assert EligibilityPolicy.always().reasons(DeviceState()) == ()


def test_a_manual_state_changes_when_the_app_says_so() -> None:
    state = ManualDeviceState(charging=True)

    state.update(charging=False, battery=0.3)

    assert state.current() == DeviceState(charging=False, battery=0.3)


def test_a_battery_level_outside_0_1_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        EligibilityPolicy(min_battery=20)
