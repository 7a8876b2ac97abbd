"""The three kinds of preset: ``compare`` (async vs sync once), ``sweep`` (over the
concurrency C) and ``grid`` (the same hyperparameter grid for both modes).

Every run of an experiment shares one :class:`~simulator.environment.Environment`:
the same fleet, shards, model and test sets.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from simulator.config import ModeConfig, TrainingConfig
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
    label: str = "",
    progress: Progress = None,
    trace: bool = False,
) -> RunResult:
    """Simulate one mode on ``env`` (async or sync, from ``mode.aggregation.mode``)."""
    cls = AsyncSimulation if mode.mode == "async" else SyncSimulation
    sim = cls(env, mode, training=training, label=label, progress=progress, trace=trace)
    result = sim.run()
    if progress is not None:
        when = "-" if result.time_to_target is None else f"{result.time_to_target:,.0f} s"
        progress(
            f"{result.label}: {result.status}, time to target {when}, "
            f"trips {result.ledger.trips:,}, {result.trained:,} updates in {result.wall_s:.1f} s"
        )
    return result


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


@dataclass
class Comparison:
    """Async and sync on the same fleet; the ratios are sync over async."""

    async_run: RunResult
    sync_run: RunResult

    @property
    def speedup(self) -> float | None:
        return _ratio(self.sync_run.time_to_target, self.async_run.time_to_target)

    @property
    def comm_ratio(self) -> float | None:
        return _ratio(self.sync_run.ledger.trips, self.async_run.ledger.trips)

    @property
    def trained(self) -> int:
        return self.async_run.trained + self.sync_run.trained

    def summary(self, wall_s: float) -> dict[str, Any]:
        """The one-line result ``asyncfl simulate --json`` prints last."""
        a, s = self.async_run, self.sync_run
        return {
            "target": a.target,
            "async_time_to_target": a.time_to_target,
            "sync_time_to_target": s.time_to_target,
            "speedup": self.speedup,
            "async_trips": a.ledger.trips,
            "sync_trips": s.ledger.trips,
            "comm_ratio": self.comm_ratio,
            "tier_accuracy_gap": {"async": a.tier_accuracy_gap, "sync": s.tier_accuracy_gap},
            "updates_per_wall_s": self.trained / wall_s if wall_s > 0 else None,
            "wall_s": wall_s,
        }


def compare(env: Environment, progress: Progress = None) -> Comparison:
    p = env.preset
    return Comparison(
        run_mode(env, p.async_mode, label=f"async C={p.async_mode.concurrency}", progress=progress),
        run_mode(env, p.sync_mode, label=f"sync C={p.sync_mode.concurrency}", progress=progress),
    )


def sweep(env: Environment, progress: Progress = None) -> list[tuple[int, Comparison]]:
    """Both modes at every concurrency of ``[sweep]``, other settings as the preset's
    (the async buffer K is capped at C; the sync goal follows C and over-selection)."""
    out = []
    for c in env.preset.sweep:
        k = min(c, env.preset.async_mode.aggregation.aggregation_goal)  # a buffer <= C
        a = env.preset.async_mode.with_values(concurrency=c, goal=k)
        s = env.preset.sync_mode.with_values(concurrency=c)
        out.append(
            (
                c,
                Comparison(
                    run_mode(env, a, label=f"async C={c}", progress=progress),
                    run_mode(env, s, label=f"sync C={c}", progress=progress),
                ),
            )
        )
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
        return Comparison(a, s) if a and s else None


def grid(env: Environment, progress: Progress = None) -> GridResult:
    """Client lr x server lr x server momentum x (K for async | over-selection for
    sync): the same points for both modes."""
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
            result.runs[mode_name].append(
                run_mode(env, mode, training=training, label=label, progress=progress)
            )
    result.wall_s = time.perf_counter() - started
    return result
