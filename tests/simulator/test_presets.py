"""Presets: the shipped ones parse, bad ones fail with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.config import cohort_size, sync_goal
from simulator.errors import PresetError
from simulator.presets import list_presets, load_preset
from tests.simulator.support import tiny_preset


def test_the_shipped_presets_load() -> None:
    names = list_presets()

    assert {"papaya-small", "papaya-sweep", "papaya-grid"} <= set(names)
    for name in names:
        assert load_preset(name).name == name


def test_papaya_small_meets_the_issue_floor() -> None:
    p = load_preset("papaya-small")

    assert p.fleet.devices >= 5000
    assert p.async_mode.concurrency == p.sync_mode.concurrency == 1000
    assert p.data.dataset == "digits" and p.data.alpha <= 1.0
    assert any(t.speed.sigma >= 0.5 for t in p.fleet.tiers)


def test_papaya_small_uses_points_of_the_grid_both_modes_searched() -> None:
    small, grid = load_preset("papaya-small"), load_preset("papaya-grid").grid
    assert grid is not None

    for mode in (small.async_mode, small.sync_mode):
        assert (mode.client_lr or small.training.client_lr) in grid.client_lr
    assert small.async_mode.aggregation.optimizer.lr in grid.server_lr
    assert small.sync_mode.aggregation.optimizer.lr in grid.server_lr
    for mode in (small.async_mode, small.sync_mode):
        opt = mode.aggregation.optimizer
        assert (opt.momentum if opt.name == "fedavgm" else 0.0) in grid.server_momentum
    assert small.async_mode.aggregation.aggregation_goal in grid.aggregation_goal
    assert small.sync_mode.aggregation.over_selection in grid.over_selection


def test_the_sweep_and_grid_share_papaya_smalls_fleet() -> None:
    small = load_preset("papaya-small")

    for name in ("papaya-sweep", "papaya-grid"):
        assert load_preset(name).fleet == small.fleet
    assert load_preset("papaya-sweep").sweep == (10, 50, 100, 300, 1000)


def test_overrides_reach_nested_tables_and_list_items() -> None:
    p = load_preset(
        "papaya-small",
        ["fleet.devices=100000", "fleet.tiers.2.dropout=0.3", "async.optimizer.lr=2.5"],
    )

    assert p.fleet.devices == 100_000
    assert p.fleet.tiers[2].dropout == 0.3
    assert p.async_mode.aggregation.optimizer.lr == 2.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("fleet.devices=0", "fleet.devices must be >= 1"),
        ("fleet.tiers.0.speed.kind='weibull'", "fleet.tiers[0].speed.kind must be one of"),
        ("data.dataset='mnist'", "data.dataset must be one of"),
        ("run.target=1.5", "run.target must be in"),
        ("fleet.colour='red'", "fleet has unknown key(s) ['colour']"),
        ("async.optimizer.name='sgd'", "async: aggregation config: optimizer.name"),
        ("sync.aggregation_goal=900", "exceeds concurrency 1000"),
        ("training.engine='gpu'", "training.engine must be one of"),
        ("kind='race'", "kind must be one of"),
        ("fleet.session_speed.sigma=-0.1", "fleet.session_speed.sigma must be in"),
        ("fleet.session_speed.kind='gamma'", "fleet.session_speed.kind must be one of"),
        ("fleet.session_speed.spread=1", "fleet.session_speed has unknown key(s) ['spread']"),
        ("fleet.tiers.0.speed.jitter=0.2", "fleet.tiers[0].speed has unknown key(s) ['jitter']"),
        ("data.partition='shuffled'", "data.partition must be one of"),
        ("training.batch_size=0", "training.batch_size must be >= 1"),
    ],
)
def test_a_bad_value_is_refused_with_its_key(override: str, message: str) -> None:
    with pytest.raises(PresetError, match="papaya-small") as info:
        load_preset("papaya-small", [override])

    assert message in info.value.message


def test_an_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(PresetError, match=r"known: .*papaya-small"):
        load_preset("papaya-huge")


def test_a_malformed_override_is_refused() -> None:
    with pytest.raises(PresetError, match=r"section\.key=value"):
        load_preset("papaya-small", ["fleet.devices"])
    with pytest.raises(PresetError, match="index below 3"):
        load_preset("papaya-small", ["fleet.tiers.7.share=1"])


def test_a_preset_file_outside_the_package_loads(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('extends = "papaya-small"\n[fleet]\ndevices = 6000\n')

    p = load_preset(str(path))

    assert p.name == "mine" and p.fleet.devices == 6000
    assert len(p.fleet.tiers) == 3


def test_invalid_toml_is_a_preset_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[fleet\n")

    with pytest.raises(PresetError, match="not valid TOML"):
        load_preset(str(path))


def test_the_sync_goal_is_the_largest_whose_cohort_fits() -> None:
    for c in (1, 7, 10, 50, 1000):
        for over in (0.0, 0.1, 0.3, 0.5):
            goal = sync_goal(c, over)
            assert cohort_size(goal, over) <= c or goal == 1
            assert cohort_size(goal + 1, over) > c
    assert tiny_preset().sync_mode.aggregation.aggregation_goal == 23


def test_the_presets_state_their_speed_model_and_partition() -> None:
    small, sweep, flsim = (load_preset(n) for n in ("papaya-small", "papaya-sweep", "flsim-digits"))

    assert small.fleet.session_speed.sigma == sweep.fleet.session_speed.sigma == 0.67
    assert small.data.partition == sweep.data.partition == "draws"
    assert flsim.data.partition == "disjoint"
    assert flsim.fleet.devices * flsim.data.max_size <= 1437  # fits the digits pool


def test_session_variation_can_be_turned_off_by_override() -> None:
    p = load_preset("papaya-small", ["fleet.session_speed.sigma=0"])

    assert p.fleet.session_speed.sigma == 0.0
