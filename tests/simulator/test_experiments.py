"""Sweep and grid experiments, their tables, JSON lines and plots (stand-in trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import experiments, plot, report
from tests.simulator.support import tiny_env

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_sweep_runs_both_modes_per_concurrency(tmp_path: Path) -> None:
    env = tiny_env("kind='sweep'", "sweep.concurrency=[4, 30]")

    rows = experiments.sweep(env)

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

    comp = experiments.compare(env)
    summary = comp.summary(wall_s=4.0)

    assert summary["speedup"] == pytest.approx(
        comp.sync_run.time_to_target / comp.async_run.time_to_target  # type: ignore[operator]
    )
    assert summary["comm_ratio"] == comp.sync_run.ledger.trips / comp.async_run.ledger.trips
    assert summary["updates_per_wall_s"] == comp.trained / 4.0
    text = report.compare_text(env, comp)
    for cause in ("staleness", "over_selection", "dropout"):
        assert cause in text
    assert plot.plot_compare(comp, tmp_path / "c.png", "t").read_bytes()[:8] == PNG


def test_format_table_aligns_numbers_right_and_marks_missing_values() -> None:
    text = report.format_table(["name", "value"], [["a", 1.5], ["bb", None], ["c", 12345]])

    lines = text.splitlines()
    assert lines[0].split() == ["name", "value"]
    assert lines[2].endswith("1.500") and lines[3].endswith("-") and lines[4].endswith("12,345")
