"""The ``privacy`` experiment: held-out accuracy against epsilon on one fleet.

Every ``target_epsilon`` of ``[privacy]`` runs the async mode with the noise the server
would add: :meth:`server.privacy.PrivacyBudget.resolve` (the server's own calibration,
``noise_multiplier = "auto"`` over ``planned_versions``) fixes ``z``, the aggregator of
:mod:`server.aggregation` adds ``z * sensitivity(n)`` Gaussian noise every version,
devices check in at most once every ``min_separation`` versions (the server's
check-in rule), and the run ends once ``planned_versions`` versions are committed (the
budget allows no more; the server would pause the task there). ``baseline`` adds the
same run without noise: same clipping, participation limit and version count, so the
difference is the noise alone. All points run on the same environments (seeds): the
same fleet, shards and session draws. The noise stream is seeded from the run's seed
(a reproducible simulation; the server draws its seed from the OS CSPRNG).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from server.aggregation.privacy import sensitivity
from server.privacy import PrivacyBudget, PrivacyConfig
from simulator.config import ModeConfig, Preset
from simulator.environment import Environment
from simulator.experiments import Phase, run_mode, run_phase
from simulator.report import format_table
from simulator.results import RunResult

__all__ = [
    "PrivacyPoint",
    "PrivacySweep",
    "budgets",
    "privacy_configs",
    "privacy_summary",
    "privacy_sweep",
    "privacy_text",
]

Progress = Callable[[str], None] | None


def privacy_configs(preset: Preset) -> list[PrivacyConfig]:
    """The server's ``privacy`` config of each DP point, in ``target_epsilon`` order."""
    p = preset.privacy
    if p is None:
        raise ValueError(f"preset {preset.name} has no [privacy]")
    return [
        PrivacyConfig.from_dict(
            {
                "target_epsilon": eps,
                "delta": p.delta,
                "noise_multiplier": "auto",
                "planned_versions": p.planned_versions,
                "min_separation": p.min_separation,
            }
        )
        for eps in p.target_epsilon
    ]


def budgets(preset: Preset) -> list[PrivacyBudget]:
    """Each point's budget, resolved against the async config as the server resolves a
    task's (ConfigError for what the server would refuse)."""
    agg = preset.async_mode.aggregation
    return [PrivacyBudget.resolve(cfg, agg) for cfg in privacy_configs(preset)]


@dataclass
class PrivacyPoint:
    """One budget (or the no-DP baseline, ``budget`` None) over every seed."""

    budget: PrivacyBudget | None
    runs: list[RunResult]
    noise_std: float = 0.0  # on the pseudo-gradient of a full buffer (K updates)

    @property
    def label(self) -> str:
        return "no DP" if self.budget is None else f"epsilon {self.budget.config.target_epsilon:g}"

    @property
    def target_epsilon(self) -> float | None:
        return None if self.budget is None else self.budget.config.target_epsilon

    @property
    def noise_multiplier(self) -> float:
        return 0.0 if self.budget is None else self.budget.noise_multiplier

    def epsilons(self) -> list[float]:
        """Epsilon reached by each run (its committed versions), inf without DP."""
        if self.budget is None:
            return [math.inf for _ in self.runs]
        return [self.budget.epsilon(r.versions) for r in self.runs]

    def accuracies(self) -> list[float]:
        return [r.final_accuracy for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        acc = self.accuracies()
        eps = self.epsilons()
        times = [r.time_to_target for r in self.runs]
        return {
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "epsilon_reached": None if self.budget is None else max(eps),
            "accuracy": {"median": _median(acc), "min": min(acc), "max": max(acc)},
            "accuracies": acc,
            "versions": [r.versions for r in self.runs],
            "time_to_target": _median_or_none(times),
            "virtual_s": _median([r.virtual_s for r in self.runs]),
            "clipped_fraction": _median(
                [r.stats["clipped"] / max(1, r.stats["folded"]) for r in self.runs]
            ),
            "noise_std": self.noise_std,
        }


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _median_or_none(values: Sequence[float | None]) -> float | None:
    value = _median([math.inf if v is None else v for v in values])
    return None if math.isinf(value) else value


@dataclass
class PrivacySweep:
    points: list[PrivacyPoint]
    planned_versions: int
    min_separation: int
    delta: float


def _dp_mode(base: ModeConfig, z: float, seed: int) -> ModeConfig:
    agg = replace(base.aggregation, noise_multiplier=z, seed=seed)
    return replace(base, aggregation=agg)


def privacy_sweep(
    envs: Sequence[Environment],
    progress: Progress = None,
    *,
    workers: int = 1,
    phase: Phase | None = None,
) -> PrivacySweep:
    """The baseline (if asked for) and every budget of ``[privacy]`` on every seed; one
    unit (:mod:`simulator.parallel`) per budget and seed."""
    preset = envs[0].preset
    p = preset.privacy
    if p is None:
        raise ValueError(f"preset {preset.name} has no [privacy]")
    plan: list[PrivacyBudget | None] = [None] if p.baseline else []
    plan += budgets(preset)
    units = [
        functools.partial(_budget_run, budget, len(envs) > 1, progress)
        for budget in plan
        for _ in envs
    ]
    done = run_phase(units, [env for _ in plan for env in envs], workers, phase)
    points = []
    for i, budget in enumerate(plan):
        runs = done[i * len(envs) : (i + 1) * len(envs)]
        agg = preset.async_mode.aggregation
        std = (
            0.0
            if budget is None
            else budget.noise_multiplier * sensitivity(agg, agg.aggregation_goal)
        )
        points.append(PrivacyPoint(budget, runs, std))
    return PrivacySweep(points, p.planned_versions, p.min_separation, p.delta)


def _budget_run(
    budget: PrivacyBudget | None, seeds: bool, progress: Progress, env: Environment
) -> RunResult:
    """One unit of :func:`privacy_sweep`: ``budget`` (None: no noise) on ``env``."""
    p = env.preset.privacy
    assert p is not None
    z = 0.0 if budget is None else budget.noise_multiplier
    mode = _dp_mode(env.preset.async_mode, z, env.preset.seed)
    limit = p.planned_versions
    if budget is not None:
        limit = min(limit, budget.max_versions)
    name = "no DP" if budget is None else f"eps={budget.config.target_epsilon:g}"
    seed = f" seed {env.preset.seed}" if seeds else ""
    return run_mode(
        env,
        mode,
        label=f"async {name} z={z:.3g}{seed}",
        progress=progress,
        min_separation=p.min_separation,
        version_limit=limit,
    )


def privacy_summary(
    result: PrivacySweep, wall_s: float, phase: Phase | None = None
) -> dict[str, Any]:
    """The one-line JSON of ``asyncfl simulate --preset privacy-sweep --json``."""
    runs = [r for pt in result.points for r in pt.runs]
    trained = sum(r.trained for r in runs)
    cpu = sum(r.cpu_s for r in runs)
    sim_wall = phase.wall_s if phase else sum(r.wall_s for r in runs)
    return {
        "delta": result.delta,
        "planned_versions": result.planned_versions,
        "min_separation": result.min_separation,
        "seeds": len(result.points[0].runs) if result.points else 0,
        "points": [pt.to_dict() for pt in result.points],
        "updates_per_wall_s": trained / sim_wall if sim_wall > 0 else None,
        "updates_per_cpu_s": trained / cpu if cpu > 0 else None,
        "workers": phase.workers if phase else 1,
        "wall_s": wall_s,
    }


def privacy_text(env: Environment, result: PrivacySweep) -> str:
    agg = env.preset.async_mode
    head = (
        f"Accuracy against epsilon (delta {result.delta:g}): async C={agg.concurrency}, "
        f"K={agg.aggregation.aggregation_goal}, clip {agg.aggregation.clip_norm:g}, "
        f"max staleness {agg.aggregation.max_staleness}, a device at most once every "
        f"{result.min_separation} versions, {result.planned_versions} versions; "
        f"accuracy at the last version, median [min, max] over {len(result.points[0].runs)} "
        "seed(s)"
    )
    rows = []
    for pt in result.points:
        d = pt.to_dict()
        acc = d["accuracy"]
        rows.append(
            [
                pt.label,
                pt.noise_multiplier,
                d["epsilon_reached"],
                acc["median"],
                f"[{acc['min']:.3f}, {acc['max']:.3f}]",
                min(d["versions"]),
                d["time_to_target"],
                d["clipped_fraction"],
            ]
        )
    table = format_table(
        [
            "budget",
            "noise mult.",
            "epsilon reached",
            "accuracy",
            "range",
            "versions",
            "time to target s",
            "clipped",
        ],
        rows,
    )
    return f"{head}\n\n{table}"
