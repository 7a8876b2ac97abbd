"""Fleet attributes, availability windows, session timing and dropouts."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from simulator import rand
from simulator.config import SpeedConfig
from simulator.distributions import sample_speeds
from simulator.fleet import Fleet
from simulator.sessions import (
    SessionPlanner,
    examples_after,
    session_factor,
    session_hash,
    steps_within_budget,
    training_seed,
)
from tests.simulator.support import tiny_preset


def test_tier_shares_follow_the_preset() -> None:
    fleet = Fleet(tiny_preset("fleet.devices=20000").fleet, seed=0)

    counts = fleet.tier_counts()

    assert counts[0] / fleet.size == pytest.approx(0.6, abs=0.02)
    assert sum(counts) == 20_000


def test_lognormal_speeds_are_heavy_tailed_and_halfnormal_bounded_below() -> None:
    rng = np.random.default_rng(0)
    heavy = sample_speeds(SpeedConfig("lognormal", median_s=1.0, sigma=1.0), rng, 100_000)
    half = sample_speeds(SpeedConfig("halfnormal", scale_s=1.0, min_s=0.2), rng, 100_000)
    trace = sample_speeds(SpeedConfig("trace", values=(0.5, 2.0)), rng, 1000)

    assert np.median(heavy) == pytest.approx(1.0, rel=0.05)
    assert np.quantile(heavy, 0.99) / np.median(heavy) > 8
    assert half.min() >= 0.2
    assert set(np.unique(trace)) == {0.5, 2.0}


@pytest.mark.parametrize("sigma", [0.3, 0.8])
def test_device_level_speeds_have_the_lognormal_mean_and_variance(sigma: float) -> None:
    rng = np.random.default_rng(1)
    draws = sample_speeds(SpeedConfig("lognormal", median_s=2.0, sigma=sigma), rng, 400_000)

    mean = 2.0 * math.exp(sigma**2 / 2)
    variance = (math.exp(sigma**2) - 1) * 4.0 * math.exp(sigma**2)
    assert draws.mean() == pytest.approx(mean, rel=0.01)
    assert draws.var() == pytest.approx(variance, rel=0.05)


def test_halfnormal_device_speeds_have_the_halfnormal_mean_and_variance() -> None:
    rng = np.random.default_rng(2)
    draws = sample_speeds(SpeedConfig("halfnormal", scale_s=1.5, min_s=0.2), rng, 400_000)

    assert draws.mean() == pytest.approx(0.2 + 1.5 * math.sqrt(2 / math.pi), rel=0.01)
    assert draws.var() == pytest.approx(1.5**2 * (1 - 2 / math.pi), rel=0.02)


def _session_factors(sigma: float, sessions: int) -> np.ndarray:
    """Each session's seconds per example over its device's, from the real planner."""
    preset = tiny_preset(
        "fleet.devices=50",
        "data.max_size=8",
        "training.time_budget_s=1e9",
        f"fleet.session_speed={{kind = 'lognormal', sigma = {sigma}}}",
    )
    fleet = Fleet(preset.fleet, seed=0)
    sizes = np.full(fleet.size, 8)
    planner = SessionPlanner(
        fleet, sizes, preset.training, params_bytes=1000, graph_bytes=1000, seed=5
    )
    out = np.empty(sessions)
    for i in range(sessions):
        s = planner.plan(i % fleet.size, 0.0, 0, None)
        out[i] = s.train_s / s.examples / fleet.seconds_per_example[s.device]
    return out


@pytest.mark.parametrize("sigma", [0.3, 0.67])
def test_session_level_factors_have_mean_one_and_the_lognormal_variance(sigma: float) -> None:
    factors = _session_factors(sigma, 100_000)

    assert factors.mean() == pytest.approx(1.0, abs=0.01)
    assert factors.var() == pytest.approx(math.exp(sigma**2) - 1, rel=0.05)
    assert np.median(factors) == pytest.approx(math.exp(-(sigma**2) / 2), rel=0.02)


def test_session_variation_off_keeps_each_device_at_its_own_speed() -> None:
    factors = _session_factors(0.0, 1000)

    assert np.allclose(factors, 1.0)


def test_session_factors_vary_across_a_devices_sessions_and_are_reproducible() -> None:
    a, b = _session_factors(0.5, 500), _session_factors(0.5, 500)

    assert np.array_equal(a, b)
    assert np.std(a[::50]) > 0.1  # sessions 0, 50, ... are all device 0's


def test_a_diurnal_fleet_is_about_window_over_24_available_and_windows_close() -> None:
    preset = tiny_preset(
        "fleet.devices=5000",
        "fleet.availability={kind = 'diurnal', window_h = 6, window_spread_h = 0}",
    )
    fleet = Fleet(preset.fleet, seed=1)

    assert fleet.available_fraction(0.0, sample=5000) == pytest.approx(0.25, abs=0.03)
    device = next(d for d in range(100) if fleet.available(d, 0.0))
    end = fleet.window_end(device, 0.0)
    assert 0 < end <= 6 * 3600 + 1e-6
    assert fleet.available(device, end - 1.0)
    assert not fleet.available(device, end + 1.0)


def test_100k_devices_fit_in_a_few_megabytes() -> None:
    tracemalloc.start()
    fleet = Fleet(tiny_preset("fleet.devices=100000").fleet, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert fleet.size == 100_000
    assert peak < 20_000_000


def _sdk_steps(n: int, bs: int, epochs: int, spe: float, budget: float) -> int:
    """The SDK's loop: check the clock before each step; each step takes its examples."""
    clock, steps = 0.0, 0
    for _ in range(epochs):
        for start in range(0, n, bs):
            if clock >= budget:
                return steps
            clock += min(bs, n - start) * spe
            steps += 1
    return steps


@pytest.mark.parametrize("n", [1, 5, 16, 33, 64])
@pytest.mark.parametrize("bs", [1, 8, 32])
@pytest.mark.parametrize("epochs", [1, 3])
def test_steps_within_budget_is_what_the_sdk_would_run(n: int, bs: int, epochs: int) -> None:
    for spe, budget in ((0.01, 100.0), (1.0, 10.0), (2.5, 7.0), (10.0, 1.0)):
        expected = _sdk_steps(n, bs, epochs, spe, budget)
        got = steps_within_budget(n, bs, epochs, spe, budget)

        assert got == expected
        assert examples_after(got, n, bs) <= n * epochs


def test_sessions_drop_at_the_tier_rate_and_download_graphs_once() -> None:
    preset = tiny_preset("fleet.devices=2000")
    fleet = Fleet(preset.fleet, seed=0)
    sizes = np.full(fleet.size, 10)
    planner = SessionPlanner(
        fleet, sizes, preset.training, params_bytes=1000, graph_bytes=5000, seed=0
    )

    sessions = [planner.plan(d % fleet.size, 0.0, 0, None) for d in range(8000)]

    for tier, rate in ((0, 0.05), (1, 0.1)):
        mine = [s for s in sessions if s.tier == tier]
        dropped = sum(s.drop_cause == "dropout" for s in mine) / len(mine)
        assert dropped == pytest.approx(rate, abs=0.02)
    first, again = sessions[0], sessions[fleet.size]
    assert (first.device, first.trip, again.trip) == (again.device, 0, 1)
    assert first.bytes_down == 6000 and again.bytes_down == 1000
    assert all(s.drop_at == math.inf or s.start <= s.drop_at <= s.end for s in sessions)


def test_the_planners_session_hash_is_the_documented_one() -> None:
    preset = tiny_preset("fleet.devices=20")
    fleet = Fleet(preset.fleet, seed=0)
    planner = SessionPlanner(
        fleet, np.full(20, 8), preset.training, params_bytes=10, graph_bytes=10, seed=9
    )

    seeds = [planner.plan(d % 20, 0.0, 0, None).seed for d in range(60)]

    assert seeds == [training_seed(session_hash(9, d % 20, d // 20)) for d in range(60)]


def test_planned_steps_and_times_are_the_budget_rules_even_when_cut_short() -> None:
    # slow devices and a short budget: many sessions end early, the rest run in full
    preset = tiny_preset(
        "fleet.devices=400",
        "fleet.session_speed.sigma=0.6",
        "training.time_budget_s=20",
        "training.epochs=2",
    )
    fleet = Fleet(preset.fleet, seed=1)
    sizes = np.random.default_rng(2).integers(1, 60, fleet.size)
    tr = preset.training
    planner = SessionPlanner(fleet, sizes, tr, params_bytes=100, graph_bytes=500, seed=4)

    sessions = [planner.plan(d % fleet.size, 3.0 * d, 0, None) for d in range(1200)]

    sigma = preset.fleet.session_speed.sigma
    cut = 0
    for s in sessions:
        factor = session_factor(sigma, rand.normal(s.key, 1)) if sigma else 1.0
        n, spe = int(sizes[s.device]), float(fleet.seconds_of[s.device]) * factor
        steps = steps_within_budget(n, tr.batch_size, tr.epochs, spe, tr.time_budget_s)
        cut += steps < tr.epochs * -(-n // tr.batch_size)
        assert (s.steps, s.examples) == (steps, examples_after(steps, n, tr.batch_size))
        assert s.train_s == s.examples * spe
        assert s.end == s.start + s.down_s + s.train_s + s.up_s
    assert 0 < cut < len(sessions)
