"""The privacy preset: the server's participation limit and calibration in simulation."""

from __future__ import annotations

import copy
import itertools
import math
from collections import defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from server.privacy import Accountant, PrivacyBudget, PrivacyConfig
from simulator.config import Preset
from simulator.environment import build_environment
from simulator.errors import PresetError
from simulator.fedbuff import AsyncSimulation
from simulator.fleet import Fleet
from simulator.parsing import parse_preset
from simulator.presets import apply_override, load_preset
from simulator.privacy import budgets, privacy_summary, privacy_sweep
from simulator.selection import DevicePicker
from tests.simulator.support import TINY, Softmax

SEPARATION = 3
PRIVATE: dict[str, Any] = {
    **copy.deepcopy(TINY),
    "kind": "privacy",
    "privacy": {
        "target_epsilon": [2.0, 8.0],
        "delta": 1e-5,
        "planned_versions": 12,
        "min_separation": SEPARATION,
    },
    "run": {"target": 0.6, "eval_every_s": 10, "max_virtual_s": 20000, "stop_at_target": False},
}
PRIVATE["async"] = {**PRIVATE["async"], "max_staleness": SEPARATION - 1, "clip_norm": 1.0}


def private_preset(*overrides: str) -> Preset:
    data = copy.deepcopy(PRIVATE)
    for item in overrides:
        apply_override(data, item)
    return parse_preset(data, "tiny-private")


def _accepted(min_separation: int, *overrides: str) -> list[tuple[int, int, int]]:
    env = build_environment(private_preset(*overrides), Softmax())
    sim = AsyncSimulation(
        env, env.preset.async_mode, trace=True, min_separation=min_separation, version_limit=40
    )
    sim.run()
    assert sim.accepted is not None and sim.agg.version == 40
    return sim.accepted


def _by_device(accepted: list[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for device, base, lands_in in accepted:
        out[device].append((base, lands_in))
    return out


def test_no_device_has_two_accepted_updates_within_min_separation_versions() -> None:
    # 60 devices, K = 5, C = 30: without the limit devices come back every version or two
    accepted = _accepted(SEPARATION, "fleet.devices=60")

    by_device = _by_device(accepted)
    assert len(accepted) >= 40 * 5
    assert any(len(v) >= 3 for v in by_device.values())
    for device, updates in by_device.items():
        bases = sorted(base for base, _ in updates)
        for a, b in itertools.pairwise(bases):
            assert b - a >= SEPARATION, (device, bases)
        versions = [lands for _, lands in updates]
        assert len(versions) == len(set(versions)), device  # m = 1: one update a version
        # what the accountant counts: at most ceil(T / N) updates in versions 1..T
        for t in range(1, 41):
            assert sum(v <= t for v in versions) <= math.ceil(t / SEPARATION)


def test_without_the_limit_the_same_fleet_breaks_it() -> None:
    accepted = _accepted(0, "fleet.devices=60")

    close = [
        device
        for device, updates in _by_device(accepted).items()
        for (a, _), (b, _) in itertools.pairwise(sorted(updates))
        if b - a < SEPARATION
    ]
    assert close  # so the test above could fail


def test_the_picker_refuses_a_device_until_min_separation_versions_passed() -> None:
    fleet = Fleet(private_preset("fleet.devices=1").fleet, 0)
    picker = DevicePicker(fleet, 0, tries=4, min_separation=SEPARATION)

    assert picker.pick(0.0, version=5) == 0
    picker.release(0)
    assert picker.pick(0.0, version=5 + SEPARATION - 1) is None
    assert picker.pick(0.0, version=5 + SEPARATION) == 0


def test_the_noise_multiplier_is_the_servers_for_the_shipped_preset() -> None:
    preset = load_preset("privacy-sweep")
    p = preset.privacy
    assert p is not None

    got = [b.noise_multiplier for b in budgets(preset)]

    expected = [
        PrivacyBudget.resolve(
            PrivacyConfig(
                target_epsilon=eps,
                delta=p.delta,
                noise_multiplier="auto",
                planned_versions=p.planned_versions,
                min_separation=p.min_separation,
            ),
            preset.async_mode.aggregation,
        ).noise_multiplier
        for eps in (1.0, 2.0, 4.0, 8.0)
    ]
    assert p.target_epsilon == (1.0, 2.0, 4.0, 8.0)
    assert got == expected
    assert got[0] > got[1] > got[2] > got[3] > 0


def test_the_shipped_preset_meets_the_accounting_assumptions() -> None:
    preset = load_preset("privacy-sweep")
    agg = preset.async_mode.aggregation
    p = preset.privacy
    assert p is not None and agg.max_staleness is not None and agg.clip_norm is not None

    assert agg.max_staleness < p.min_separation  # one update of a device per version
    assert agg.aggregation_goal >= 100  # user-level DP without amplification needs a big K
    # enough devices to take turns: K updates a version, each device once every N
    assert preset.fleet.devices >= 2 * agg.aggregation_goal * p.min_separation
    assert p.baseline and len(preset.run.seeds) >= 3


def test_a_sweep_runs_every_budget_to_its_end_with_that_noise() -> None:
    env = build_environment(private_preset(), Softmax())

    result = privacy_sweep([env])

    assert [pt.target_epsilon for pt in result.points] == [None, 2.0, 8.0]
    expected = [0.0, *(b.noise_multiplier for b in budgets(env.preset))]
    for pt, z in zip(result.points, expected, strict=True):
        (run,) = pt.runs
        assert run.hyper["noise_multiplier"] == z
        assert run.status == "budget" and run.versions == 12
        assert run.curve[-1][1] == run.final_accuracy
    summary = privacy_summary(result, 1.0)
    for point, budget in zip(summary["points"][1:], budgets(env.preset), strict=True):
        accountant = Accountant(
            budget.noise_multiplier, 1e-5, min_separation=SEPARATION, max_staleness=SEPARATION - 1
        )
        assert point["epsilon_reached"] == pytest.approx(accountant.epsilon(12))
        assert point["epsilon_reached"] <= point["target_epsilon"]
        assert point["noise_std"] == pytest.approx(budget.noise_multiplier * 1.0 / 5)
    assert summary["points"][0]["epsilon_reached"] is None


def test_every_budget_sees_the_same_fleet_and_sessions() -> None:
    env = build_environment(private_preset(), Softmax())
    sims = []
    for z in (0.0, 20.0):
        mode = env.preset.async_mode
        mode = replace(mode, aggregation=replace(mode.aggregation, noise_multiplier=z))
        sim = AsyncSimulation(
            env,
            mode,
            trace=True,
            min_separation=SEPARATION,
            version_limit=12,
        )
        sim.run()
        sims.append(sim)

    assert sims[0].accepted == sims[1].accepted
    assert not np.allclose(
        np.concatenate([p.ravel() for p in sims[0].agg.params]),
        np.concatenate([p.ravel() for p in sims[1].agg.params]),
    )


def test_the_preset_refuses_unknown_keys() -> None:
    with pytest.raises(PresetError, match=r"privacy has unknown key\(s\) \['colour'\]"):
        load_preset("privacy-sweep", ["privacy.colour='red'"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("privacy.target_epsilon=[]", "privacy.target_epsilon must list epsilons > 0"),
        ("privacy.target_epsilon=[0.0]", "privacy.target_epsilon must list epsilons > 0"),
        ("privacy.noise_multiplier=2.0", "privacy.noise_multiplier must be a string"),
        ("privacy.min_separation=0", "privacy.min_separation must be >= 1"),
        ("privacy.delta=1.5", "privacy.delta must be in"),
        ("async.clip_norm=0", "clip_norm"),
        ("async.max_staleness=-1", "max_staleness"),
    ],
)
def test_a_bad_privacy_value_is_refused_with_its_key(override: str, message: str) -> None:
    with pytest.raises(PresetError, match="privacy-sweep") as info:
        load_preset("privacy-sweep", [override])

    assert message in info.value.message


def test_a_budget_the_server_would_refuse_is_refused_at_load() -> None:
    data = copy.deepcopy(PRIVATE)
    del data["async"]["clip_norm"]

    with pytest.raises(PresetError, match=r"privacy needs aggregation\.clip_norm"):
        parse_preset(data, "tiny-private")
