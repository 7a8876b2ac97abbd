"""``asyncfl simulate`` end to end: tables, JSON line last, plot, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main

TINY = """
extends = "papaya-small"
description = "a small, quick comparison for the tests"
[data]
eval_devices = 20
[fleet]
devices = 400
[async]
concurrency = 40
[sync]
concurrency = 40
[run]
target = 0.5
max_virtual_s = 3000
"""


@pytest.fixture
def tiny_preset_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_simulate_prints_tables_then_one_json_line_and_writes_a_plot(
    tiny_preset_file: Path,
    mlp_bundle_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = ["simulate", "--preset", str(tiny_preset_file), "--json", "--out", str(out)]

    # one worker: forked workers' progress lines would bypass capsys
    code = main([*argv, "--bundle-dir", str(mlp_bundle_dir), "--workers", "1"])

    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert code == 0
    assert set(summary) == {
        "target",
        "async_time_to_target",
        "sync_time_to_target",
        "speedup",
        "async_trips",
        "sync_trips",
        "comm_ratio",
        "tier_accuracy_gap",
        "updates_per_wall_s",
        "updates_per_cpu_s",
        "workers",
        "wall_s",
        "gate",
        "training_speed",
    }
    assert summary["workers"] == 1
    assert summary["target"] == 0.5
    assert summary["speedup"] == pytest.approx(
        summary["sync_time_to_target"] / summary["async_time_to_target"]
    )
    gap = summary["tier_accuracy_gap"]
    assert set(gap) == {"async", "sync", "async_minus_sync", "reverses"}
    assert gap["async"]["min"] <= gap["async"]["median"] <= gap["async"]["max"]
    assert "tier accuracy gap" in captured.out
    # each mode's client lr (papaya-small's 0.3 and 1.0) gated, both batched
    assert [(g["lr"], g["path"]) for g in summary["gate"]] == [(0.3, "batched"), (1.0, "batched")]
    assert summary["training_speed"]["matmul_fraction"] > 0
    assert "wasted work until the target" in captured.out
    assert "fairness per tier" in captured.out
    assert "async C=40" in captured.err  # progress goes to stderr
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "result.json").read_text())
    assert saved["summary"] == summary
    assert saved["runs"]["async"][0]["curve"][0][0] == 0.0


def test_list_names_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list"]) == 0

    assert "papaya-small" in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "papaya-small", "--set", "fleet.devices=-1"], "fleet.devices must be"),
        (["--preset", "papaya-small", "--set", "nonsense"], "section.key=value"),
        ([], "--preset is required"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *argv]) == 2

    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


PRIVATE = """
extends = "privacy-sweep"
description = "a small, quick privacy sweep for the tests"
[data]
eval_devices = 20
[fleet]
devices = 600
[async]
concurrency = 40
aggregation_goal = 20
max_staleness = 1
[privacy]
target_epsilon = [4.0]
planned_versions = 6
min_separation = 2
[run]
seeds = [0]
"""


def test_simulate_a_privacy_preset_prints_accuracy_per_epsilon_and_a_plot(
    mlp_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preset = tmp_path / "private.toml"
    preset.write_text(PRIVATE)
    out = tmp_path / "out"
    argv = ["simulate", "--preset", str(preset), "--json", "--out", str(out)]

    code = main([*argv, "--bundle-dir", str(mlp_bundle_dir)])

    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0
    assert [p["target_epsilon"] for p in summary["points"]] == [None, 4.0]
    dp = summary["points"][1]
    assert 0 < dp["epsilon_reached"] <= 4.0 and dp["noise_multiplier"] > 0
    assert dp["versions"] == [6]
    assert dp["accuracy"]["min"] <= dp["accuracy"]["median"] <= dp["accuracy"]["max"]
    assert "epsilon reached" in captured.out
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


TIMINGS = {"wall_s", "cpu_s", "updates_per_wall_s", "updates_per_cpu_s", "workers"}


def _without_timings(value: object) -> object:
    """``value`` without the fields that measure this machine (wall and CPU seconds)."""
    if isinstance(value, dict):
        return {
            k: _without_timings(v)
            for k, v in value.items()
            if k not in TIMINGS and k not in ("updates_per_command_wall_s", "training_speed")
        }
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _table_without_wall_column(text: str) -> str:
    """The tables with the runs table's ``wall s`` column blanked (its span is the run
    of dashes under the header)."""
    lines = text.splitlines()
    out, span = [], None
    for i, line in enumerate(lines):
        if "wall s" in line and i + 1 < len(lines):
            at, dashes = line.index("wall s"), lines[i + 1]
            end = dashes.find(" ", at)
            span = (dashes.rfind(" ", 0, at) + 1, len(dashes) if end < 0 else end)
        elif not line.strip():
            span = None
        if span is not None:
            line = line[: span[0]] + " " * (span[1] - span[0]) + line[span[1] :]
        out.append(line)
    return "\n".join(out)


def test_runs_in_parallel_workers_give_the_output_of_one_process(
    tiny_preset_file: Path, mlp_bundle_dir: Path, tmp_path: Path
) -> None:
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"workers-{workers}"
        argv = ["simulate", "--preset", str(tiny_preset_file), "--out", str(out)]
        argv += ["--set", "run.seeds=[0,1]", "--workers", workers]
        main([*argv, "--bundle-dir", str(mlp_bundle_dir)])
        saved = json.loads((out / "result.json").read_text())
        table = _table_without_wall_column((out / "table.txt").read_text())
        outputs[workers] = (saved, table, (out / "plot.png").read_bytes())

    (one, table_one, png_one), (two, table_two, png_two) = outputs["1"], outputs["2"]
    assert (one["summary"]["workers"], two["summary"]["workers"]) == (1, 2)
    assert _without_timings(one) == _without_timings(two)
    assert table_one == table_two
    assert png_one == png_two
