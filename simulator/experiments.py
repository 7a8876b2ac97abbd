"""The three kinds of preset: ``compare`` (async vs sync), ``sweep`` (over the
concurrency C) and ``grid`` (the same hyperparameter grid for both modes).

An experiment runs on one :class:`~simulator.environment.Environment` per seed
(``run.seeds``): every mode and configuration sees the same fleets, shards, model and
test sets; results are medians over the seeds. The grid tunes on the first seed.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from simulator.config import ModeConfig, RunConfig, TrainingConfig
from simulator.environment import Environment
from simulator.fedbuff import AsyncSimulation
from simulator.results import RunResult
from simulator.rounds import SyncSimulation

__all__ = ["Comparison", "GridResult", "compare", "grid", "run_mode", "sweep"]

Progress = Callable[[str], None] | None


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

    def summary(self, wall_s: float) -> dict[str, Any]:
        """The one-line result ``asyncfl simulate --json`` prints last (medians over
        the seeds).

        ``tier_accuracy_gap``: :meth:`gap_spread`. ``updates_per_wall_s``: client
        updates trained and uploaded (all runs) per wall second of simulation (the
        runs: events, local training, aggregation, evaluation); ``updates_per_cpu_s``:
        the same per CPU second of this process (about what a quiet machine's wall rate
        would be); ``wall_s``: the whole command, setup and plotting included.
        """
        return {
            "target": self.async_runs[0].target,
            "async_time_to_target": self.async_time,
            "sync_time_to_target": self.sync_time,
            "speedup": self.speedup,
            "async_trips": self.async_trips,
            "sync_trips": self.sync_trips,
            "comm_ratio": self.comm_ratio,
            "tier_accuracy_gap": self.gap_spread(),
            "updates_per_wall_s": _ratio(self.trained, self.simulation_wall_s),
            "updates_per_cpu_s": _ratio(self.trained, self.simulation_cpu_s),
            "wall_s": wall_s,
        }


def _label(mode: ModeConfig, env: Environment, envs: Sequence[Environment]) -> str:
    seed = f" seed {env.preset.seed}" if len(envs) > 1 else ""
    return f"{mode.mode} C={mode.concurrency}{seed}"


def compare(envs: Sequence[Environment], progress: Progress = None) -> Comparison:
    """Async and sync with the preset's settings on every environment (seed)."""
    comp = Comparison([], [])
    for env in envs:
        for mode, runs in (
            (env.preset.async_mode, comp.async_runs),
            (env.preset.sync_mode, comp.sync_runs),
        ):
            runs.append(run_mode(env, mode, label=_label(mode, env, envs), progress=progress))
    return comp


def sweep(envs: Sequence[Environment], progress: Progress = None) -> list[tuple[int, Comparison]]:
    """Both modes at every concurrency of ``[sweep]``, other settings as the preset's
    (the async buffer K is capped at C; the sync goal follows C and over-selection)."""
    out = []
    for c in envs[0].preset.sweep:
        comp = Comparison([], [])
        for env in envs:
            k = min(c, env.preset.async_mode.aggregation.aggregation_goal)  # a buffer <= C
            a = env.preset.async_mode.with_values(concurrency=c, goal=k)
            s = env.preset.sync_mode.with_values(concurrency=c)
            comp.async_runs.append(run_mode(env, a, label=_label(a, env, envs), progress=progress))
            comp.sync_runs.append(run_mode(env, s, label=_label(s, env, envs), progress=progress))
        out.append((c, comp))
    return out


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


def grid(env: Environment, progress: Progress = None) -> GridResult:
    """Client lr x server lr x server momentum x (K for async | over-selection for
    sync): the same points for both modes.

    Runs of a mode stop at the best time to target found so far (plus the hold): a
    point that has not reached the target by then cannot be the fastest, so the winner
    is the one an exhaustive search would find, at a fraction of the cost.
    """
    p = env.preset
    g = p.grid
    if g is None:
        raise ValueError("the preset has no [grid]")
    result = GridResult(runs={"async": [], "sync": []})
    started = time.perf_counter()
    axes: dict[str, tuple[Any, ...]] = {
        "async": g.aggregation_goal,
        "sync": g.over_selection,
    }
    for mode_name, base in (("async", p.async_mode), ("sync", p.sync_mode)):
        best = p.run.max_virtual_s
        for client_lr, server_lr, momentum, third in itertools.product(
            g.client_lr, g.server_lr, g.server_momentum, axes[mode_name]
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
            result.runs[mode_name].append(r)
            if r.time_to_target is not None:
                best = min(best, r.time_to_target)
    result.wall_s = time.perf_counter() - started
    return result
