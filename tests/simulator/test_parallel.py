"""Independent units in forked workers: results in unit order, one per idle CPU."""

from __future__ import annotations

import functools
import os

import psutil
import pytest

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


def test_the_idle_share_of_this_machine_is_a_share() -> None:
    share = parallel.idle_share(0.05)

    assert share is not None and 0.0 <= share <= 1.0


def test_the_idle_share_is_idle_and_iowait_over_all_time_between_the_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    times = psutil.cpu_times()
    fields = times._fields
    first = times._replace(**dict.fromkeys(fields, 10.0))
    # 0.5 s user, 0.25 s system, 1.0 s idle, 0.25 s iowait pass between the readings
    passed = {"user": 0.5, "system": 0.25, "idle": 1.0, "iowait": 0.25}
    second = first._replace(**{k: 10.0 + v for k, v in passed.items() if k in fields})
    readings = iter([first, second])
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(readings))

    want = (1.25 if "iowait" in fields else 1.0) / sum(v for k, v in passed.items() if k in fields)
    assert parallel.idle_share(0.0) == pytest.approx(want)


def test_unreadable_cpu_times_give_no_share(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise PermissionError("no /proc here")

    monkeypatch.setattr(psutil, "cpu_times", refuse)

    assert parallel.idle_share(0.0) is None


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
