"""Independent units in forked workers: results in unit order, one per idle CPU."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import experiments, parallel
from tests.simulator.support import tiny_env


def _square_with_pid(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def test_units_give_their_results_in_unit_order_from_other_processes() -> None:
    units = [functools.partial(_square_with_pid, i) for i in range(7)]

    got = parallel.run_units(units, workers=2)

    assert [value for value, _ in got] == [i * i for i in range(7)]
    assert {pid for _, pid in got} - {os.getpid()}  # forked, not run here


def test_one_worker_runs_the_units_here() -> None:
    got = parallel.run_units([functools.partial(_square_with_pid, 3)], workers=4)

    assert got == [(9, os.getpid())]


@pytest.mark.parametrize(("share", "workers"), [(1.0, 2), (0.6, 1), (0.8, 2), (0.0, 1)])
def test_the_default_is_one_worker_per_idle_cpu(
    monkeypatch: pytest.MonkeyPatch, share: float, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(parallel, "idle_share", lambda: share)

    assert parallel.default_workers() == workers


@pytest.mark.parametrize(("load", "workers"), [(0.0, 2), (0.7, 1), (0.4, 2), (3.5, 1)])
def test_without_proc_stat_the_default_goes_by_the_load_average(
    monkeypatch: pytest.MonkeyPatch, load: float, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(parallel, "idle_share", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))

    assert parallel.default_workers() == workers


def _stat_line(user: int, idle: int, iowait: int) -> str:
    return f"cpu  {user} 0 {user // 4} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def test_the_idle_share_is_idle_and_iowait_over_all_time_between_two_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    stat.write_text(_stat_line(1000, 5000, 100))
    # between the readings: 300 user + 75 system + 100 idle + 25 iowait ticks pass
    monkeypatch.setattr(time, "sleep", lambda _: stat.write_text(_stat_line(1300, 5100, 125)))

    assert parallel.idle_share(0.25, str(stat)) == pytest.approx(125 / 500)


def test_the_idle_share_of_this_machine_is_a_share() -> None:
    share = parallel.idle_share(0.05)

    if not Path("/proc/stat").exists():
        assert share is None
    else:
        assert share is not None and 0.0 <= share <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_an_unreadable_stat_file_gives_no_share_and_never_raises(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat"
        stat.write_text(text, encoding="utf-8")
        share = parallel.idle_share(0.0, str(stat))

    assert share is None or 0.0 <= share <= 1.0


def test_a_missing_stat_file_gives_no_share(tmp_path: Path) -> None:
    assert parallel.idle_share(0.0, str(tmp_path / "absent")) is None


def test_a_comparison_in_two_workers_is_the_comparison_in_one() -> None:
    envs = [tiny_env(), tiny_env("seed=4")]
    serial, forked = experiments.Phase(), experiments.Phase()

    one = experiments.compare(envs, workers=1, phase=serial)
    two = experiments.compare(envs, workers=2, phase=forked)

    timing = {"wall_s", "cpu_s"}
    for a, b in zip(one.async_runs + one.sync_runs, two.async_runs + two.sync_runs, strict=True):
        da, db = a.to_dict(), b.to_dict()
        assert {k: v for k, v in da.items() if k not in timing} == {
            k: v for k, v in db.items() if k not in timing
        }
    assert (serial.workers, forked.workers) == (1, 2)
    assert forked.wall_s > 0
