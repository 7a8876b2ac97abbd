"""Tiny end-to-end runs of run.py and bench_ingest.py: their last stdout line is the
JSON contract the README and CI read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from load_tests.loadgen import native_binary, wrk_available

REPO = Path(__file__).resolve().parents[2]
RUN_KEYS = {
    "users",
    "seconds",
    "checkins_per_s",
    "uploads_per_s",
    "failures",
    "checkin_p50_ms",
    "checkin_p99_ms",
    "upload_p99_ms",
    "server_rss_mb_start",
    "server_rss_mb_end",
}
BENCH_KEYS = {"payload_bytes", "bare_rps", "asyncfl_rps", "ratio", "asyncfl_p99_ms"}

pytestmark = pytest.mark.slow


def _json_lines(script: str, *args: str, timeout_s: float = 150) -> list[dict[str, Any]]:
    """Run a load_tests script to its end (exit 0); the JSON lines it printed."""
    done = subprocess.run(
        [sys.executable, str(REPO / "load_tests" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(x) for x in done.stdout.strip().splitlines() if x.startswith("{")]


def _last_json_line(script: str, *args: str, timeout_s: float = 150) -> dict[str, Any]:
    return _json_lines(script, *args, timeout_s=timeout_s)[-1]


def test_run_py_prints_the_fleet_figures_last(tmp_path: Path) -> None:
    doc = _last_json_line(
        "run.py",
        "--users",
        "20",
        "--seconds",
        "5",
        "--ramp-s",
        "2",
        "--train-time",
        "lognormal:0.5:0.5",
        "--out",
        str(tmp_path / "report"),
        "--json",
    )

    assert set(doc) >= RUN_KEYS
    assert doc["users"] == 20 and doc["failures"] == 0
    assert doc["checkins_per_s"] > 0 and doc["uploads_per_s"] > 0
    assert 0 < doc["checkin_p50_ms"] <= doc["checkin_p99_ms"]
    assert doc["server_rss_mb_start"] > 0 and doc["server_rss_mb_end"] > 0
    assert doc["server_updates_accepted"] > 0 and doc["server_updates_rejected"] == {}
    assert doc["5xx"] == 0 and doc["5xx_by_status"] == {}
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "locust_stats.csv").exists()


@pytest.mark.parametrize(
    "generator",
    [
        "aiohttp",
        pytest.param(
            "wrk", marks=pytest.mark.skipif(not wrk_available(), reason="wrk not installed")
        ),
        pytest.param(
            "native",
            marks=pytest.mark.skipif(native_binary() is None, reason="no C compiler"),
        ),
    ],
)
def test_bench_ingest_prints_one_line_per_size_the_last_one_400k(
    tmp_path: Path, generator: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "load_tests" / "bench_ingest.py"),
            "--sizes",
            "40k,400k",
            "--seconds",
            "1",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--connections",
            "2",
            "--session-factor",
            "1.3",
            "--load-generator",
            generator,
            "--data-dir",
            str(tmp_path),
            "--secagg-bodies",
            "30",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]

    assert len(lines) == 2
    assert all(set(line) >= BENCH_KEYS for line in lines)
    assert [line["params"] for line in lines] == [10_100, 100_100]
    assert lines[-1]["payload_bytes"] > 400_000
    assert all(line["bare_rps"] > 0 and line["asyncfl_rps"] > 0 for line in lines)
    assert all(line["disk_rps"] > 0 and line["disk_ratio"] > 0 for line in lines)
    assert all(line["logic_rps"] > 0 and line["logic_ratio"] > 0 for line in lines)
    assert all(line["load_generator"] == generator for line in lines)
    # the secure side: masked uploads acknowledged, priced against plain ones
    assert all(line["secagg_rps"] > 0 and line["secagg_vs_plain"] > 0 for line in lines)
    assert not list(tmp_path.iterdir())  # the temporary server dirs are gone


@pytest.mark.skipif(native_binary() is None, reason="no C compiler")
def test_compare_generators_prints_each_generator_with_one_and_distinct_bodies() -> None:
    doc = _last_json_line(
        "compare_generators.py",
        *("--seconds", "1", "--rounds", "1", "--connections", "2", "--json"),
        timeout_s=120,
    )

    generators = ["native"] + (["wrk"] if wrk_available() else [])
    for name in generators:
        for bodies in ("one", "distinct"):
            assert doc[f"{name}_{bodies}_rps"] > 0
            assert doc[f"{name}_{bodies}_cpu_us_per_req"] > 0


def test_compare_generators_refuses_a_bad_duration() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "load_tests" / "compare_generators.py"), "--seconds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "must be positive" in done.stderr


def test_the_ledger_audit_finds_every_upload_in_exactly_one_place() -> None:
    result = _last_json_line("ledger_audit.py", "--sessions", "60", "--devices", "4", "--json")
    assert result["ok"] is True
    assert result["acknowledged"] > 0 and result["refused"] > 0
    assert result["applied_rows"] + result["buffered"] == result["acknowledged"]
    assert result["rejected_rows"] == result["refused"]
    assert result["duplicates_answered"] == result["retries"]


def test_bench_enroll_prints_a_line_per_concurrency_with_every_enrollment_201() -> None:
    lines = _json_lines("bench_enroll.py", "--devices", "200", "--concurrency", "4", "32", "--json")
    assert [x["concurrency"] for x in lines] == [4, 32]
    assert all(x["statuses"] == {"201": 200} and x["enrollments_per_s"] > 0 for x in lines)


def test_bench_commit_commits_every_version_and_row_it_times() -> None:
    (line,) = _json_lines("bench_commit.py", "--commits", "5", "--versions", "3", "--rows", "4")
    assert line["head"] == 6 * 3 and line["applied"] == 6 * 3 * 4  # with the warm-up's
    assert line["loop_cpu_us_per_row"] > 0 and line["wall_ms_per_commit"] > 0


def test_bench_checkpoint_cuts_whole_groups_while_versions_wait() -> None:
    (line,) = _json_lines(
        "bench_checkpoint.py", "--groups", "30", "--per-group", "7", "--goal", "10",
        "--groups-per-commit", "10", "--log-fsync", "never",
    )  # fmt: skip
    # 210 uploads: 21 versions; each tenth group commits, the others wait with versions
    assert line["versions"] == 21 and line["groups"] == 30
    assert 0 < line["whole_groups"] < 30
    assert line["loop_cpu_us_per_group"] > 0
    assert line["process_cpu_us_per_group"] >= line["loop_cpu_us_per_group"]
