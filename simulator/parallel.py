"""Independent runs of an experiment in parallel worker processes, with the same output.

An experiment is cut into *units* (for a comparison or sweep: one seed's runs of one
mode; for a privacy sweep: one budget on one seed; for a grid: one mode's points) that
share nothing they change: each unit trains with its own batched trainer
(:meth:`~simulator.batched.DenseBatchTrainer.fresh`: its own gate and speed counters),
and every random draw of a run comes from the seed, the device and the trip
(:mod:`simulator.rand`), never from the order runs happen in. So a unit gives the same
result in any process and any order, and :func:`run_units` returns the results in unit
order: tables, JSON and plots do not depend on ``workers`` (only the wall and CPU
timings do, and progress lines on stderr may interleave).

Workers are forked (Linux): they inherit the environments built by the parent (fleets,
shards, test sets, ONNX sessions of one thread) instead of rebuilding them, and send back
only results. Without ``fork`` (or with one worker, or one unit) units run here in turn.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psutil

__all__ = ["default_workers", "run_units"]

T = TypeVar("T")

# The units of the call in progress: forked workers read them from here (inherited),
# so closures need not be pickled; only their results travel back.
_UNITS: Sequence[Callable[[], Any]] = ()


def default_workers() -> int:
    """One worker per idle CPU: the CPUs this process may use times the share of CPU time
    the machine left idle over :data:`SAMPLE_S` (psutil's CPU times), at least one. Where
    that cannot be read, the CPUs minus the 1-minute load average, which also counts this
    process's own runs of the minute before (measured here: a second command right after
    a first got one worker on an idle machine). On a machine others keep busy, forked
    workers only take turns with them and with each other (measured here at load 3-5 on
    2 cores: two workers ran papaya-small at 4,900-6,000 updates a wall second, one at
    6,700-7,700)."""
    cpus = _cpus()
    share = idle_share()
    if share is not None:
        idle = cpus * share
    else:
        try:
            idle = cpus - os.getloadavg()[0]
        except OSError:  # no load average here
            idle = float(cpus)
    return max(1, min(cpus, int(idle + 0.5)))


SAMPLE_S = 0.25  # how long default_workers watches the machine


def idle_share(sample_s: float = SAMPLE_S) -> float | None:
    """The share of all CPUs' time spent idle (or waiting for I/O, where the system
    tells) between two readings of psutil's CPU times ``sample_s`` apart; None where
    they cannot be read. (``psutil.cpu_times_percent(0.25)`` said 50% idle of this idle
    2-CPU machine, psutil 7.2.2; the two readings' difference says 100%.)"""
    try:
        first = psutil.cpu_times()
        time.sleep(sample_s)
        second = psutil.cpu_times()
    except (OSError, RuntimeError, psutil.Error):
        return None
    total = sum(second) - sum(first)
    if not total > 0:
        return None
    idle = second.idle - first.idle + getattr(second, "iowait", 0.0) - getattr(first, "iowait", 0.0)
    return min(1.0, max(0.0, idle / total))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _run(index: int) -> Any:
    return _UNITS[index]()


def _share_blas(threads: int) -> None:
    """In a worker: BLAS gets this worker's share of the CPUs (OpenBLAS would start one
    thread per CPU in every worker: N workers, N times too many threads)."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=threads)


def run_units(units: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Each unit's result, in unit order, computed by up to ``workers`` processes."""
    global _UNITS
    workers = min(workers, len(units))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [unit() for unit in units]
    _UNITS = units
    try:
        threads = max(1, _cpus() // workers)
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_share_blas, initargs=(threads,)) as pool:
            # one unit at a time: units differ in length, so a free worker takes the next
            return pool.map(_run, range(len(units)), chunksize=1)
    finally:
        _UNITS = ()
