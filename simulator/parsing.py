"""Turning a preset's TOML table into a :class:`~simulator.config.Preset`.

Every bad value raises :class:`~simulator.errors.PresetError` naming its key. The
``[async]`` and ``[sync]`` tables take the keys of
:class:`server.aggregation.AggregationConfig` (validated by it) plus ``concurrency``.
"""

from __future__ import annotations

from typing import Any

from server.aggregation import AggregationConfig
from server.errors import ConfigError
from simulator.config import (
    AvailabilityConfig,
    DataConfig,
    FleetConfig,
    GridConfig,
    ModeConfig,
    Preset,
    PrivacySweepConfig,
    RunConfig,
    SessionSpeedConfig,
    SpeedConfig,
    TierConfig,
    TrainingConfig,
    cohort_size,
    sync_goal,
)
from simulator.errors import PresetError
from simulator.fields import Table

__all__ = ["parse_preset"]

KINDS: tuple[str, ...] = ("compare", "sweep", "grid", "privacy")
SPEEDS: tuple[str, ...] = ("lognormal", "halfnormal", "trace")
DATASETS: tuple[str, ...] = ("digits", "synthetic")


def parse_preset(data: dict[str, Any], name: str) -> Preset:
    """Validate a preset's TOML table (after overrides) into a :class:`Preset`."""
    top = Table(data, "")
    kind = top.string("kind", "compare", choices=KINDS)
    preset = Preset(
        name=name,
        description=top.string("description", ""),
        kind=kind,
        seed=top.integer("seed", 0),
        data=_data(top.table("data")),
        training=_training(top.table("training")),
        fleet=_fleet(top.table("fleet")),
        async_mode=_mode(top.table("async"), "async"),
        sync_mode=_mode(top.table("sync"), "sync"),
        run=_run(top.table("run")),
        sweep=_sweep(top.table("sweep"), required=kind == "sweep"),
        grid=_grid(top.table("grid")) if kind == "grid" or top.has("grid") else None,
        privacy=(
            _privacy(top.table("privacy")) if kind == "privacy" or top.has("privacy") else None
        ),
    )
    top.close()
    if preset.privacy is not None:
        _check_budgets(preset)
    return preset


def _speed(t: Table) -> SpeedConfig:
    kind = t.string("kind", "lognormal", choices=SPEEDS)
    speed = SpeedConfig(
        kind=kind,
        median_s=t.number("median_s", 0.5, low=0.0, low_open=True),
        sigma=t.number("sigma", 0.5, low=0.0, high=4.0),
        scale_s=t.number("scale_s", 0.5, low=0.0, low_open=True),
        min_s=t.number("min_s", 0.0, low=0.0),
        values=t.numbers("values", ()),
    )
    if kind == "trace" and (not speed.values or min(speed.values) <= 0):
        raise t.fail("values", "must list > 0 seconds per example for a trace")
    t.close()
    return speed


def _tier(t: Table) -> TierConfig:
    tier = TierConfig(
        name=t.string("name"),
        share=t.number("share", low=0.0, low_open=True),
        speed=_speed(t.table("speed")),
        down_mbps=t.number("down_mbps", 20.0, low=0.0, low_open=True, allow_inf=True),
        up_mbps=t.number("up_mbps", 5.0, low=0.0, low_open=True, allow_inf=True),
        dropout=t.number("dropout", 0.0, low=0.0, high=0.99),
        train_power_w=t.number("train_power_w", 2.0, low=0.0),
        radio_power_w=t.number("radio_power_w", 1.0, low=0.0),
    )
    t.close()
    return tier


def _fleet(t: Table) -> FleetConfig:
    devices = t.integer("devices", minimum=1)
    tiers = tuple(_tier(x) for x in t.tables("tiers"))
    if len({x.name for x in tiers}) != len(tiers):
        raise t.fail("tiers", "must have distinct names")
    a = t.table("availability")
    availability = AvailabilityConfig(
        kind=a.string("kind", "always", choices=("always", "diurnal")),
        window_h=a.number("window_h", 8.0, low=0.0, high=24.0, low_open=True),
        window_spread_h=a.number("window_spread_h", 2.0, low=0.0, high=12.0),
        start_h=a.number("start_h", 22.0, low=0.0, high=24.0),
        start_spread_h=a.number("start_spread_h", 2.0, low=0.0, high=24.0),
        tz_spread_h=a.number("tz_spread_h", 24.0, low=0.0, high=24.0),
        sim_start_h=a.number("sim_start_h", 0.0, low=0.0, high=24.0),
    )
    a.close()
    v = t.table("session_speed")
    session_speed = SessionSpeedConfig(
        kind=v.string("kind", "lognormal", choices=("lognormal",)),
        sigma=v.number("sigma", 0.0, low=0.0, high=2.0),
    )
    v.close()
    fleet = FleetConfig(
        devices=devices,
        tiers=tiers,
        availability=availability,
        rtt_s=t.number("rtt_s", 0.1, low=0.0),
        bandwidth_sigma=t.number("bandwidth_sigma", 0.0, low=0.0, high=3.0),
        session_speed=session_speed,
    )
    t.close()
    return fleet


def _data(t: Table) -> DataConfig:
    cfg = DataConfig(
        dataset=t.string("dataset", "digits", choices=DATASETS),
        partition=t.string("partition", "draws", choices=("draws", "disjoint")),
        alpha=t.number("alpha", 0.5, low=0.0),
        beta=t.number("beta", 0.5, low=0.0),
        size_median=t.number("size_median", 32.0, low=1.0),
        size_sigma=t.number("size_sigma", 0.5, low=0.0, high=4.0),
        min_size=t.integer("min_size", 8, minimum=1),
        max_size=t.integer("max_size", 256, minimum=1),
        tier_correlation=t.number("tier_correlation", 0.0, low=0.0, high=1.0),
        features=t.integer("features", 60, minimum=1),
        classes=t.integer("classes", 10, minimum=2),
        iid=t.boolean("iid", False),
        eval_devices=t.integer("eval_devices", 200, minimum=1),
        eval_examples=t.integer("eval_examples", 20, minimum=1),
    )
    if cfg.dataset == "digits" and cfg.alpha <= 0:
        raise t.fail("alpha", "must be > 0 for Dirichlet label skew")
    if cfg.partition == "disjoint" and cfg.dataset != "digits":
        raise t.fail(
            "partition", "'disjoint' splits a pool (digits); synthetic shards are per device"
        )
    if cfg.max_size < cfg.min_size:
        raise t.fail("max_size", f"must be >= min_size ({cfg.min_size})")
    t.close()
    return cfg


def _training(t: Table) -> TrainingConfig:
    cfg = TrainingConfig(
        model=t.string("model", "mlp"),
        engine=t.string("engine", "auto", choices=("auto", "onnx", "batched")),
        client_lr=t.number("client_lr", 0.1, low=0.0, low_open=True),
        batch_size=t.integer("batch_size", 16, minimum=1),
        epochs=t.integer("epochs", 1, minimum=1),
        time_budget_s=t.number("time_budget_s", 240.0, low=0.0, low_open=True),
        session_timeout_s=t.number("session_timeout_s", 300.0, low=0.0, low_open=True),
    )
    t.close()
    return cfg


def _mode(t: Table, mode: str) -> ModeConfig:
    concurrency = t.integer("concurrency", 100, minimum=1)
    client_lr = t.number("client_lr", 0.0, low=0.0) or None
    if t.has("mode"):
        raise t.fail("mode", "is implied by the table name")
    values = {"mode": mode, **t.rest()}
    try:
        if mode == "sync" and "aggregation_goal" not in values:
            over = AggregationConfig.from_dict(values).over_selection
            values["aggregation_goal"] = sync_goal(concurrency, over)
        agg = AggregationConfig.from_dict(values)
    except ConfigError as exc:
        raise PresetError(f"{t.where}: {exc.message}") from exc
    if mode == "sync" and cohort_size(agg.aggregation_goal, agg.over_selection) > concurrency:
        raise t.fail(
            "aggregation_goal",
            f"{agg.aggregation_goal} x (1 + over_selection) exceeds concurrency {concurrency}",
        )
    return ModeConfig(concurrency, agg, client_lr)


def _run(t: Table) -> RunConfig:
    cfg = RunConfig(
        target=t.number("target", 0.85, low=0.0, high=1.0, low_open=True),
        eval_every_s=t.number("eval_every_s", 30.0, low=0.0, low_open=True),
        max_virtual_s=t.number("max_virtual_s", 86_400.0, low=0.0, low_open=True),
        max_trips=t.integer("max_trips", 2_000_000, minimum=1),
        stop_at_target=t.boolean("stop_at_target", True),
        hold_s=t.number("hold_s", 0.0, low=0.0),
        patience_s=t.number("patience_s", 0.0, low=0.0),
        seeds=t.integers("seeds", (), minimum=0),
        progress_every_s=t.number("progress_every_s", 5.0, low=0.0, low_open=True),
    )
    t.close()
    return cfg


def _sweep(t: Table, *, required: bool) -> tuple[int, ...]:
    values = t.integers("concurrency") if required else t.integers("concurrency", ())
    if required and not values:
        raise t.fail("concurrency", "must list at least one concurrency")
    t.close()
    return values


def _grid(t: Table) -> GridConfig:
    grid = GridConfig(
        client_lr=t.numbers("client_lr"),
        server_lr=t.numbers("server_lr"),
        aggregation_goal=t.integers("aggregation_goal"),
        over_selection=t.numbers("over_selection"),
        server_momentum=t.numbers("server_momentum", (0.9,)),
    )
    if not grid.server_momentum or not all(0 <= m < 1 for m in grid.server_momentum):
        raise t.fail("server_momentum", "must list momenta in [0, 1)")
    for key in ("client_lr", "server_lr"):
        values = getattr(grid, key)
        if not values or min(values) <= 0:
            raise t.fail(key, "must list learning rates > 0")
    if not grid.aggregation_goal or not grid.over_selection or min(grid.over_selection) < 0:
        raise t.fail("over_selection", "and aggregation_goal must be non-empty (>= 0)")
    t.close()
    return grid


def _privacy(t: Table) -> PrivacySweepConfig:
    t.string("noise_multiplier", "auto", choices=("auto",))  # the only calibration here
    cfg = PrivacySweepConfig(
        target_epsilon=t.numbers("target_epsilon"),
        delta=t.number("delta", 1e-5, low=0.0, high=1.0, low_open=True),
        planned_versions=t.integer("planned_versions", 100, minimum=1),
        min_separation=t.integer("min_separation", 1, minimum=1),
        baseline=t.boolean("baseline", True),
    )
    if not cfg.target_epsilon or min(cfg.target_epsilon) <= 0:
        raise t.fail("target_epsilon", "must list epsilons > 0")
    t.close()
    return cfg


def _check_budgets(preset: Preset) -> None:
    """Resolve every budget the way the server does, so a preset it would refuse (no
    clip_norm, no max_staleness, a budget one version exceeds) fails at load."""
    from simulator.privacy import budgets  # imports dp-accounting: only for DP presets

    try:
        budgets(preset)
    except ConfigError as exc:
        raise PresetError(f"privacy: {exc.message}") from exc
