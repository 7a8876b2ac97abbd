"""What a simulation preset describes, as frozen typed values parsed from TOML.

:func:`simulator.parsing.parse_preset` builds them from a preset's TOML table. The
simulator's own units: seconds of *virtual* time, bytes, watts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from server.aggregation import AggregationConfig, OptimizerConfig

__all__ = [
    "AvailabilityConfig",
    "DataConfig",
    "FleetConfig",
    "GridConfig",
    "ModeConfig",
    "Preset",
    "PrivacySweepConfig",
    "RunConfig",
    "SessionSpeedConfig",
    "SpeedConfig",
    "TierConfig",
    "TrainingConfig",
    "cohort_size",
    "sync_goal",
]


@dataclass(frozen=True)
class SpeedConfig:
    """Seconds one device needs per training example *on average*, drawn once per
    device (the first level of the speed model; :class:`SessionSpeedConfig` is the second).

    ``lognormal``: median ``median_s``, log-space spread ``sigma`` (heavy right tail);
    ``halfnormal``: ``min_s + |N(0, scale_s)|`` (FLSim's duration model); ``trace``:
    drawn uniformly from measured ``values``.
    """

    kind: str = "lognormal"
    median_s: float = 0.5
    sigma: float = 0.5
    scale_s: float = 0.5
    min_s: float = 0.0
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class SessionSpeedConfig:
    """The second level of the speed model: every session multiplies its device's mean
    seconds per example by a factor of mean one (thermal state, foreground apps).

    ``lognormal``: ``exp(sigma * Z - sigma**2 / 2)``, Z standard normal, so the factor's
    mean is 1 and its variance ``exp(sigma**2) - 1``; ``sigma = 0`` is no variation (a
    device always trains at its own speed).
    """

    kind: str = "lognormal"
    sigma: float = 0.0


@dataclass(frozen=True)
class TierConfig:
    """A class of devices: speed, network (``inf`` Mbps: transfers take no time),
    per-session dropout probability and power draw while training / transferring."""

    name: str
    share: float
    speed: SpeedConfig
    down_mbps: float = 20.0
    up_mbps: float = 5.0
    dropout: float = 0.0
    train_power_w: float = 2.0
    radio_power_w: float = 1.0


@dataclass(frozen=True)
class AvailabilityConfig:
    """When devices may train: ``always``, or a daily ``diurnal`` window.

    A diurnal device is eligible (idle, charging, unmetered) for about ``window_h``
    hours a day starting near ``start_h`` local time; local time is UTC plus an offset
    spread uniformly over ``tz_spread_h`` hours; virtual time 0 is ``sim_start_h`` UTC.
    A session still running when the window closes is interrupted.
    """

    kind: str = "always"
    window_h: float = 8.0
    window_spread_h: float = 2.0
    start_h: float = 22.0
    start_spread_h: float = 2.0
    tz_spread_h: float = 24.0
    sim_start_h: float = 0.0


@dataclass(frozen=True)
class FleetConfig:
    devices: int
    tiers: tuple[TierConfig, ...]
    availability: AvailabilityConfig = AvailabilityConfig()
    rtt_s: float = 0.1
    bandwidth_sigma: float = 0.0
    session_speed: SessionSpeedConfig = SessionSpeedConfig()


@dataclass(frozen=True)
class DataConfig:
    """Device shards. ``digits``: label skew, each device's class mix ~ Dirichlet(alpha);
    ``partition = "draws"`` draws its examples from the digits pool with that mix (with
    replacement: devices may share examples, so any fleet size works), ``"disjoint"``
    splits the pool into disjoint shards (no example on two devices, none twice; the
    shards' total must fit in the pool), as most FL benchmarks partition.
    ``synthetic``: LEAF Synthetic(alpha, beta) (``iid``: LEAF's shared-model variant).
    Sizes are lognormal (median, sigma)
    clipped to [min_size, max_size]. ``tier_correlation`` in [0, 1] ties data to tier
    (RF^2): 0 is independent, 1 gives each tier its own classes / feature shift.
    """

    dataset: str = "digits"
    partition: str = "draws"
    alpha: float = 0.5
    beta: float = 0.5
    size_median: float = 32.0
    size_sigma: float = 0.5
    min_size: int = 8
    max_size: int = 256
    tier_correlation: float = 0.0
    features: int = 60
    classes: int = 10
    iid: bool = False
    eval_devices: int = 200
    eval_examples: int = 20


@dataclass(frozen=True)
class TrainingConfig:
    """Local training (the SDK's TrainPlan) and the session limits both modes share.

    ``time_budget_s`` caps local training as the SDK's plan does (a device reports the
    steps that fit); ``session_timeout_s`` is the async lease (and the default sync round
    deadline). ``engine``: ``onnx`` trains every device through the SDK's trainer,
    ``batched`` many at once (:mod:`simulator.batched`, checked against ``onnx`` at
    start), ``auto`` batched when the model allows it.
    """

    model: str = "mlp"
    engine: str = "auto"
    client_lr: float = 0.1
    batch_size: int = 16
    epochs: int = 1
    time_budget_s: float = 240.0
    session_timeout_s: float = 300.0


@dataclass(frozen=True)
class ModeConfig:
    """One aggregation mode: its concurrency and its server.aggregation config.

    Sync: ``aggregation_goal`` defaults to ``floor(concurrency / (1 + over_selection))``
    so that the cohort ``ceil(goal * (1 + over_selection))`` never exceeds concurrency.
    ``client_lr``, when set, replaces ``training.client_lr`` for this mode (each mode
    runs with its own grid winner).
    """

    concurrency: int
    aggregation: AggregationConfig
    client_lr: float | None = None

    @property
    def mode(self) -> str:
        return self.aggregation.mode

    def with_values(
        self,
        *,
        concurrency: int | None = None,
        server_lr: float | None = None,
        server_momentum: float | None = None,
        goal: int | None = None,
        over_selection: float | None = None,
    ) -> ModeConfig:
        """A copy with some values changed (sync goal re-derived from concurrency)."""
        agg = self.aggregation
        if server_lr is not None:
            agg = replace(agg, optimizer=replace(agg.optimizer, lr=server_lr))
        if server_momentum is not None:  # FedAvgM with momentum 0 is FedAvg
            name = "fedavgm" if server_momentum > 0 else "fedavg"
            opt = OptimizerConfig.of(name, lr=agg.optimizer.lr)
            if server_momentum > 0:
                opt = replace(opt, momentum=server_momentum)
            agg = replace(agg, optimizer=opt)
        if over_selection is not None:
            agg = replace(agg, over_selection=over_selection)
        c = self.concurrency if concurrency is None else concurrency
        if goal is not None:
            agg = replace(agg, aggregation_goal=goal)
        elif agg.mode == "sync":
            agg = replace(agg, aggregation_goal=sync_goal(c, agg.over_selection))
        return ModeConfig(c, agg, self.client_lr)


@dataclass(frozen=True)
class RunConfig:
    """When to evaluate and when to stop. The target is reached at the first
    evaluation from which accuracy stays >= ``target`` for ``hold_s`` (0: the first
    crossing; noisy curves can cross by luck). ``patience_s`` > 0 stops a run whose
    best accuracy has not improved for that long (a grid prunes diverged points).
    ``seeds``: compare and sweep repeat on these seeds (fleet, shards, sessions) and
    report medians; empty means the preset's ``seed`` alone."""

    target: float = 0.85
    eval_every_s: float = 30.0
    max_virtual_s: float = 86_400.0
    max_trips: int = 2_000_000
    stop_at_target: bool = True
    hold_s: float = 0.0
    patience_s: float = 0.0
    seeds: tuple[int, ...] = ()
    progress_every_s: float = 5.0


@dataclass(frozen=True)
class GridConfig:
    """The hyperparameter grid both modes get (server lr in our mean-of-K convention).

    ``server_momentum`` 0 means FedAvg, > 0 FedAvgM with that momentum.
    """

    client_lr: tuple[float, ...]
    server_lr: tuple[float, ...]
    aggregation_goal: tuple[int, ...]
    over_selection: tuple[float, ...]
    server_momentum: tuple[float, ...] = (0.9,)


@dataclass(frozen=True)
class PrivacySweepConfig:
    """A ``privacy`` preset's budgets (the server's ``privacy`` keys, one run per epsilon).

    Each ``target_epsilon`` gets a DP run whose noise multiplier is ``"auto"``: calibrated
    by the server's :class:`server.privacy.PrivacyBudget` for ``planned_versions`` at
    ``delta`` with the participation limit ``min_separation``; ``baseline`` adds a run
    without noise (same clipping, participation limit and version count).
    """

    target_epsilon: tuple[float, ...]
    delta: float = 1e-5
    planned_versions: int = 100
    min_separation: int = 1
    baseline: bool = True


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    kind: str
    seed: int
    data: DataConfig
    training: TrainingConfig
    fleet: FleetConfig
    async_mode: ModeConfig
    sync_mode: ModeConfig
    run: RunConfig
    sweep: tuple[int, ...] = ()
    grid: GridConfig | None = None
    privacy: PrivacySweepConfig | None = None


def cohort_size(goal: int, over_selection: float) -> int:
    """Devices a sync round selects (as :class:`server.aggregation.SyncRoundAggregator`)."""
    return math.ceil(goal * (1 + over_selection))


def sync_goal(concurrency: int, over_selection: float) -> int:
    """The largest goal whose over-selected cohort fits in ``concurrency``."""
    goal = max(1, int(concurrency / (1 + over_selection)))
    while goal > 1 and cohort_size(goal, over_selection) > concurrency:
        goal -= 1
    return goal
