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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["default_workers", "run_units"]

T = TypeVar("T")

# The units of the call in progress: forked workers read them from here (inherited),
# so closures need not be pickled; only their results travel back.
_UNITS: Sequence[Callable[[], Any]] = ()


def default_workers() -> int:
    """One worker per idle CPU: the CPUs this process may use minus the 1-minute load
    average (at least one). On a machine others keep busy, forked workers only take
    turns with them and with each other (measured here at load 3-5 on 2 cores: two
    workers ran papaya-small at 4,900-6,000 updates a wall second, one at 6,700-7,700)."""
    cpus = _cpus()
    try:
        idle = cpus - os.getloadavg()[0]
    except OSError:  # no load average here
        idle = float(cpus)
    return max(1, min(cpus, int(idle + 0.5)))


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
