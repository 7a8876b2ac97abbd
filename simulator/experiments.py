"""The three kinds of preset: ``compare`` (async vs sync), ``sweep`` (over the
concurrency C) and ``grid`` (the same hyperparameter grid for both modes).

An experiment runs on one :class:`~simulator.environment.Environment` per seed
(``run.seeds``): every mode and configuration sees the same fleets, shards, model and
test sets; results are medians over the seeds. The grid tunes on the first seed.

Each experiment is cut into independent units (:mod:`simulator.parallel`) that up to
``workers`` processes run at once; the results do not depend on ``workers``. A
:class:`Phase` passed in records what the units cost (wall time, the trainers' counters).
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from simulator.config import ModeConfig, RunConfig, TrainingConfig
from simulator.environment import Environment
from simulator.fedbuff import AsyncSimulation
from simulator.parallel import run_units
from simulator.results import RunResult
from simulator.rounds import SyncSimulation

__all__ = [
    "Comparison",
    "GridResult",
    "Phase",
    "compare",
    "grid",
    "run_mode",
    "run_phase",
    "sweep",
    "unit_env",
]

Progress = Callable[[str], None] | None
T = TypeVar("T")


@dataclass
class Phase:
    """What running an experiment's units cost: ``wall_s`` from the first unit's start to
    the last one's end (workers included), and each unit's trainer counters
    (:class:`~simulator.speed.TrainerStats`, for the gate and speed reports)."""

    workers: int = 1
    wall_s: float = 0.0
    trainers: list[Any] = field(default_factory=list)


def unit_env(env: Environment) -> Environment:
    """``env`` with a trainer of its own (its own gate and counters) when the trainer
    can make one, so a unit's gating does not depend on which units ran before it."""
    fresh = getattr(env.trainer, "fresh", None)
    return env if fresh is None else replace(env, trainer=fresh())


def _stats(env: Environment) -> Any:
    stats = getattr(env.trainer, "stats", None)
    return None if stats is None else stats()


def run_phase(
    units: Sequence[Callable[[Environment], T]],
    envs: Sequence[Environment],
    workers: int,
    phase: Phase | None,
) -> list[T]:
    """Run ``units[i](unit_env(envs[i]))`` for every i on up to ``workers`` processes;
    results in unit order, costs into ``phase``."""

    def call(unit: Callable[[Environment], T], env: Environment) -> tuple[T, Any]:
        own = unit_env(env)
        return unit(own), _stats(own)

    started = time.perf_counter()
    done = run_units(
        [functools.partial(call, u, e) for u, e in zip(units, envs, strict=True)], workers
    )
    if phase is not None:
        phase.workers = max(1, min(workers, len(units)))
        phase.wall_s += time.perf_counter() - started
        phase.trainers += [stats for _, stats in done if stats is not None]
    return [result for result, _ in done]


def run_mode(
    env: Environment,
    mode: ModeConfig,
    *,
    training: TrainingConfig | None = None,
    run: RunConfig | None = None,
    label: str = "",
    progress: Progress = None,
    trace: bool = False,
    min_separation: int = 0,
    version_limit: int | None = None,
) -> RunResult:
    """Simulate one mode on ``env`` (async or sync, from ``mode.aggregation.mode``);
    ``min_separation`` and ``version_limit``: a DP task's limits (:mod:`.engine`)."""
    cls = AsyncSimulation if mode.mode == "async" else SyncSimulation
    sim = cls(
        env,
        mode,
        training=training,
        run=run,
        label=label,
        progress=progress,
        trace=trace,
        min_separation=min_separation,
        version_limit=version_limit,
    )
    result = sim.run()
    if progress is not None:
        when = "-" if result.time_to_target is None else f"{result.time_to_target:,.0f} s"
        progress(
            f"{result.label}: {result.status}, time to target {when}, "
            f"trips {result.ledger.trips:,}, {result.trained:,} updates in {result.wall_s:.1f} s"
        )
    return result


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _median(values: list[float | None]) -> float | None:
    """Median with "never" (None) as infinity; None when most runs never got there."""
    ordered = sorted(math.inf if v is None else v for v in values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return None if math.isinf(value) else value


def _representative(runs: list[RunResult]) -> RunResult:
    """The run with the median time to target (the lower middle one for even counts)."""
    ordered = sorted(runs, key=lambda r: math.inf if r.time_to_target is None else r.time_to_target)
    return ordered[(len(ordered) - 1) // 2]


@dataclass
class Comparison:
    """Async and sync on the same fleets, one run per seed and mode.

    Times, trips and gaps are medians over the seeds; the ratios are sync over async
    of those medians. ``async_run`` / ``sync_run`` are each mode's median run (the
    one the waste, fairness and energy tables describe).
    """

    async_runs: list[RunResult]
    sync_runs: list[RunResult]

    @property
    def async_run(self) -> RunResult:
        return _representative(self.async_runs)

    @property
    def sync_run(self) -> RunResult:
        return _representative(self.sync_runs)

    @property
    def async_time(self) -> float | None:
        return _median([r.time_to_target for r in self.async_runs])

    @property
    def sync_time(self) -> float | None:
        return _median([r.time_to_target for r in self.sync_runs])

    @property
    def async_trips(self) -> float | None:
        return _median([r.ledger.trips for r in self.async_runs])

    @property
    def sync_trips(self) -> float | None:
        return _median([r.ledger.trips for r in self.sync_runs])

    @property
    def speedup(self) -> float | None:
        return _ratio(self.sync_time, self.async_time)

    @property
    def comm_ratio(self) -> float | None:
        return _ratio(self.sync_trips, self.async_trips)

    @property
    def reached(self) -> bool:
        return all(r.reached for r in self.async_runs + self.sync_runs)

    @property
    def trained(self) -> int:
        return sum(r.trained for r in self.async_runs + self.sync_runs)

    @property
    def simulation_wall_s(self) -> float:
        return sum(r.wall_s for r in self.async_runs + self.sync_runs)

    @property
    def simulation_cpu_s(self) -> float:
        return sum(r.cpu_s for r in self.async_runs + self.sync_runs)

    def gap_spread(self) -> dict[str, Any]:
        """Per-tier accuracy gaps (best tier minus worst) over the seeds: median, min and
        max per mode; ``async_minus_sync`` per seed; ``reverses`` when async is the
        less fair mode on some seeds and the fairer one on others."""
        out: dict[str, Any] = {}
        for mode, runs in (("async", self.async_runs), ("sync", self.sync_runs)):
            gaps = [r.tier_accuracy_gap for r in runs]
            out[mode] = {"median": _median(list(gaps)), "min": min(gaps), "max": max(gaps)}
        diffs = [
            a.tier_accuracy_gap - s.tier_accuracy_gap
            for a, s in zip(self.async_runs, self.sync_runs, strict=True)
        ]
        out["async_minus_sync"] = diffs
        out["reverses"] = any(d > 0 for d in diffs) and any(d < 0 for d in diffs)
        return out

    def summary(self, wall_s: float, phase: Phase | None = None) -> dict[str, Any]:
        """The one-line result ``asyncfl simulate --json`` prints last (medians over
        the seeds).

        ``tier_accuracy_gap``: :meth:`gap_spread`. ``updates_per_wall_s``: client
        updates trained and uploaded (all runs) per wall second of simulation (the
        runs: events, local training, aggregation, evaluation; with a ``phase``, the wall
        time from the first run's start to the last one's end, in ``workers``
        processes); ``updates_per_cpu_s``: the same per CPU second of the runs (summed
        over the processes that ran them: what one process would do on a quiet
        machine); ``wall_s``: the whole command, setup and plotting included.
        """
        sim_wall = phase.wall_s if phase is not None else self.simulation_wall_s
        return {
            "target": self.async_runs[0].target,
            "async_time_to_target": self.async_time,
            "sync_time_to_target": self.sync_time,
            "speedup": self.speedup,
            "async_trips": self.async_trips,
            "sync_trips": self.sync_trips,
            "comm_ratio": self.comm_ratio,
            "tier_accuracy_gap": self.gap_spread(),
            "updates_per_wall_s": _ratio(self.trained, sim_wall),
            "updates_per_cpu_s": _ratio(self.trained, self.simulation_cpu_s),
            "workers": phase.workers if phase is not None else 1,
            "wall_s": wall_s,
        }


def _label(mode: ModeConfig, env: Environment, envs: Sequence[Environment]) -> str:
    seed = f" seed {env.preset.seed}" if len(envs) > 1 else ""
    return f"{mode.mode} C={mode.concurrency}{seed}"


def _mode_runs(
    modes: Sequence[tuple[str, ModeConfig]], progress: Progress, env: Environment
) -> list[RunResult]:
    """One unit: ``modes`` (label, config) in turn on ``env``."""
    return [run_mode(env, m, label=label, progress=progress) for label, m in modes]


def compare(
    envs: Sequence[Environment],
    progress: Progress = None,
    *,
    workers: int = 1,
    phase: Phase | None = None,
) -> Comparison:
    """Async and sync with the preset's settings on every environment (seed); one unit
    per seed and mode."""
    units, unit_envs = [], []
    for env in envs:
        for mode in (env.preset.async_mode, env.preset.sync_mode):
            modes = [(_label(mode, env, envs), mode)]
            units.append(functools.partial(_mode_runs, modes, progress))
            unit_envs.append(env)
    done = run_phase(units, unit_envs, workers, phase)
    return Comparison(
        [r for (r,) in done[0::2]],
        [r for (r,) in done[1::2]],
    )


def sweep(
    envs: Sequence[Environment],
    progress: Progress = None,
    *,
    workers: int = 1,
    phase: Phase | None = None,
) -> list[tuple[int, Comparison]]:
    """Both modes at every concurrency of ``[sweep]``, other settings as the preset's
    (the async buffer K is capped at C; the sync goal follows C and over-selection);
    one unit per seed and mode (its runs at every C)."""
    concurrency = envs[0].preset.sweep
    units, unit_envs = [], []
    for env in envs:
        a_modes, s_modes = [], []
        for c in concurrency:
            k = min(c, env.preset.async_mode.aggregation.aggregation_goal)  # a buffer <= C
            a = env.preset.async_mode.with_values(concurrency=c, goal=k)
            s = env.preset.sync_mode.with_values(concurrency=c)
            a_modes.append((_label(a, env, envs), a))
            s_modes.append((_label(s, env, envs), s))
        for modes in (a_modes, s_modes):
            units.append(functools.partial(_mode_runs, modes, progress))
            unit_envs.append(env)
    done = run_phase(units, unit_envs, workers, phase)
    return [
        (c, Comparison([runs[i] for runs in done[0::2]], [runs[i] for runs in done[1::2]]))
        for i, c in enumerate(concurrency)
    ]


@dataclass
class GridResult:
    """Every run of the grid, per mode, and the best (fastest to target) of each."""

    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    wall_s: float = 0.0

    def best(self, mode: str) -> RunResult | None:
        reached = [r for r in self.runs.get(mode, []) if r.time_to_target is not None]
        return min(reached, key=lambda r: r.time_to_target or 0.0) if reached else None

    def comparison(self) -> Comparison | None:
        a, s = self.best("async"), self.best("sync")
        return Comparison([a], [s]) if a and s else None


def grid(
    env: Environment,
    progress: Progress = None,
    *,
    workers: int = 1,
    phase: Phase | None = None,
) -> GridResult:
    """Client lr x server lr x server momentum x (K for async | over-selection for
    sync): the same points for both modes; one unit per mode.

    Runs of a mode stop at the best time to target found so far (plus the hold): a
    point that has not reached the target by then cannot be the fastest, so the winner
    is the one an exhaustive search would find, at a fraction of the cost.
    """
    if env.preset.grid is None:
        raise ValueError("the preset has no [grid]")
    started = time.perf_counter()
    modes = ("async", "sync")
    units = [functools.partial(_grid_mode, name, progress) for name in modes]
    done = run_phase(units, [env, env], workers, phase)
    result = GridResult(runs=dict(zip(modes, done, strict=True)))
    result.wall_s = time.perf_counter() - started
    return result


def _grid_mode(mode_name: str, progress: Progress, env: Environment) -> list[RunResult]:
    """One unit of :func:`grid`: every point of one mode, in order."""
    p = env.preset
    g = p.grid
    assert g is not None
    base = p.async_mode if mode_name == "async" else p.sync_mode
    third_axis = g.aggregation_goal if mode_name == "async" else g.over_selection
    runs: list[RunResult] = []
    best = p.run.max_virtual_s
    for client_lr, server_lr, momentum, third in itertools.product(
        g.client_lr, g.server_lr, g.server_momentum, third_axis
    ):
        training = replace(p.training, client_lr=client_lr)
        values: dict[str, Any] = {"server_lr": server_lr, "server_momentum": momentum}
        if mode_name == "async":
            mode = base.with_values(goal=int(third), **values)
            tag = f"K={third}"
        else:
            mode = base.with_values(over_selection=float(third), **values)
            tag = f"over={third}"
        label = f"{mode_name} clr={client_lr} slr={server_lr} mom={momentum} {tag}"
        # A point still short of the target when the best so far had it cannot win.
        run = replace(p.run, max_virtual_s=min(p.run.max_virtual_s, best + p.run.hold_s))
        r = run_mode(env, mode, training=training, run=run, label=label, progress=progress)
        runs.append(r)
        if r.time_to_target is not None:
            best = min(best, r.time_to_target)
    return runs
