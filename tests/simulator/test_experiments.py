"""Sweep and grid experiments, their tables, JSON lines and plots (stand-in trainer)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from simulator import experiments, plot, report
from simulator.results import RunResult
from tests.simulator.support import tiny_env

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_sweep_runs_both_modes_per_concurrency(tmp_path: Path) -> None:
    env = tiny_env("kind='sweep'", "sweep.concurrency=[4, 30]")

    rows = experiments.sweep([env])

    assert [c for c, _ in rows] == [4, 30]
    small = rows[0][1]
    assert small.async_run.concurrency == small.sync_run.concurrency == 4
    assert small.async_run.hyper["aggregation_goal"] == 4  # K capped at C
    assert small.sync_run.max_active <= 4
    summary = report.sweep_summary(rows, wall_s=2.0)
    assert summary["concurrency"] == [4, 30]
    assert summary["speedup"] == [x.speedup for _, x in rows]
    assert "time to target by concurrency C" in report.sweep_text(env, rows)
    assert plot.plot_sweep(rows, tmp_path / "s.png", "t").read_bytes()[:8] == PNG


def test_a_grid_gives_both_modes_the_same_points_and_picks_the_fastest(tmp_path: Path) -> None:
    env = tiny_env(
        "kind='grid'",
        "grid={client_lr = [0.5], server_lr = [1.0], server_momentum = [0.0, 0.5], "
        "aggregation_goal = [5, 10], over_selection = [0.1, 0.3]}",
    )

    result = experiments.grid(env)

    for mode in ("async", "sync"):
        runs = result.runs[mode]
        assert len(runs) == 4
        assert {r.hyper["server_momentum"] for r in runs} == {0.0, 0.5}
        assert {r.hyper["optimizer"] for r in runs} == {"fedavg", "fedavgm"}
        best = result.best(mode)
        assert best is not None
        assert best.time_to_target == min(r.time_to_target or 1e18 for r in runs)
    assert {r.hyper["aggregation_goal"] for r in result.runs["async"]} == {5, 10}
    assert {r.hyper["over_selection"] for r in result.runs["sync"]} == {0.1, 0.3}
    summary = report.grid_summary(result, wall_s=1.0)
    assert summary["runs"] == 8 and summary["best"]["async"] is not None
    assert "async grid (4 runs)" in report.grid_text(env, result)
    assert plot.plot_grid(result, tmp_path / "g.png", "t").read_bytes()[:8] == PNG


def test_a_comparison_reports_ratios_of_sync_over_async(tmp_path: Path) -> None:
    env = tiny_env()

    comp = experiments.compare([env])
    summary = comp.summary(wall_s=4.0)

    assert summary["speedup"] == pytest.approx(
        comp.sync_run.time_to_target / comp.async_run.time_to_target  # type: ignore[operator]
    )
    assert summary["comm_ratio"] == comp.sync_run.ledger.trips / comp.async_run.ledger.trips
    # throughput of the simulation itself; wall_s is the whole command
    assert summary["updates_per_wall_s"] == pytest.approx(comp.trained / comp.simulation_wall_s)
    assert summary["updates_per_cpu_s"] == pytest.approx(comp.trained / comp.simulation_cpu_s)
    assert summary["wall_s"] == 4.0
    text = report.compare_text(env, comp)
    for cause in ("staleness", "over_selection", "dropout"):
        assert cause in text
    assert plot.plot_compare(comp, tmp_path / "c.png", "t").read_bytes()[:8] == PNG


def test_format_table_aligns_numbers_right_and_marks_missing_values() -> None:
    text = report.format_table(["name", "value"], [["a", 1.5], ["bb", None], ["c", 12345]])

    lines = text.splitlines()
    assert lines[0].split() == ["name", "value"]
    assert lines[2].endswith("1.500") and lines[3].endswith("-") and lines[4].endswith("12,345")


def test_cutting_grid_runs_at_the_best_time_so_far_keeps_the_winner() -> None:
    env = tiny_env(
        "kind='grid'",
        "grid={client_lr = [0.2, 0.5], server_lr = [0.5, 1.0], aggregation_goal = [5], "
        "over_selection = [0.3]}",
    )

    result = experiments.grid(env)

    exhaustive = []
    for r in result.runs["async"]:
        mode = env.preset.async_mode.with_values(
            server_lr=r.hyper["server_lr"], server_momentum=r.hyper["server_momentum"], goal=5
        )
        training = replace(env.preset.training, client_lr=r.hyper["client_lr"])
        exhaustive.append(experiments.run_mode(env, mode, training=training).time_to_target)
    best = result.best("async")
    assert best is not None
    assert best.time_to_target == min(t for t in exhaustive if t is not None)


def test_several_seeds_give_medians_and_a_median_run() -> None:
    envs = [tiny_env(f"seed={seed}") for seed in (1, 2, 3)]

    comp = experiments.compare(envs)

    assert [r.label for r in comp.async_runs] == [f"async C=30 seed {s}" for s in (1, 2, 3)]
    times = sorted(r.time_to_target or 0.0 for r in comp.async_runs)
    assert comp.async_time == times[1]
    assert comp.async_run.time_to_target == times[1]
    assert comp.summary(1.0)["async_time_to_target"] == times[1]
    assert comp.speedup == pytest.approx((comp.sync_time or 0) / times[1])


def test_a_mode_can_train_with_its_own_client_learning_rate() -> None:
    env = tiny_env("async.client_lr=0.05")

    result = experiments.run_mode(env, env.preset.async_mode)
    other = experiments.run_mode(env, env.preset.sync_mode)

    assert result.hyper["client_lr"] == 0.05
    assert other.hyper["client_lr"] == env.preset.training.client_lr


def _with_gap(run: RunResult, gap: float) -> RunResult:
    return replace(run, tier_accuracy={"fast": 0.9, "slow": 0.9 - gap})


def test_tier_gaps_are_reported_as_median_and_range_and_a_reversal_is_named() -> None:
    comp = experiments.compare([tiny_env()])
    a, s = comp.async_run, comp.sync_run
    gaps = [(0.10, 0.05), (0.02, 0.08), (0.12, 0.06)]  # async less fair on seeds 0 and 2
    mixed = experiments.Comparison(
        [_with_gap(a, x) for x, _ in gaps], [_with_gap(s, y) for _, y in gaps]
    )
    steady = experiments.Comparison([_with_gap(a, 0.1)] * 2, [_with_gap(s, 0.05)] * 2)

    spread = mixed.gap_spread()

    assert spread["async"] == pytest.approx({"median": 0.10, "min": 0.02, "max": 0.12})
    assert spread["sync"] == pytest.approx({"median": 0.06, "min": 0.05, "max": 0.08})
    assert spread["reverses"] is True
    assert "REVERSES between modes: async's is the larger on 2 of 3 seeds" in report.gap_text(mixed)
    assert steady.gap_spread()["reverses"] is False
    assert "REVERSES" not in report.gap_text(steady)
