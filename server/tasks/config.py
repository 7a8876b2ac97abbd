"""A task's configuration: who trains (concurrency), how (client plan), and how the
server aggregates (:class:`~server.aggregation.AggregationConfig`).

JSON form, as the admin API takes it (every field optional)::

    {"concurrency": 100, "session_deadline_s": 240, "eval_every": 1,
     "plan": {"lr": 0.1, "batch_size": 32, "epochs": 1, "max_steps": null,
              "time_budget_s": null},
     "aggregation": {"mode": "async", "aggregation_goal": 10, ...}}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from server.aggregation import AggregationConfig
from server.errors import ConfigError


@dataclass(frozen=True)
class ClientPlan:
    """What a device is asked to do in one session (sent at check-in)."""

    lr: float = 0.1
    batch_size: int = 32
    epochs: int = 1
    max_steps: int | None = None
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.lr < 1e3):
            raise ConfigError(f"plan.lr must be in (0, 1000), got {self.lr}")
        if not 1 <= self.batch_size <= 65536:
            raise ConfigError(f"plan.batch_size must be in 1..65536, got {self.batch_size}")
        if not 1 <= self.epochs <= 1000:
            raise ConfigError(f"plan.epochs must be in 1..1000, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("plan.max_steps must be >= 1")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError("plan.time_budget_s must be > 0")


@dataclass(frozen=True)
class TaskConfig:
    concurrency: int = 100
    session_deadline_s: float | None = None  # None: the server's default
    eval_every: int = 1  # evaluate every N-th version on the held-out set (0: never)
    federated_eval_fraction: float = 0.0  # share of check-ins asked to evaluate on-device
    plan: ClientPlan = field(default_factory=ClientPlan)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 10_000_000:
            raise ConfigError(f"concurrency must be in 1..10000000, got {self.concurrency}")
        if self.session_deadline_s is not None and self.session_deadline_s <= 0:
            raise ConfigError("session_deadline_s must be > 0")
        if self.eval_every < 0:
            raise ConfigError("eval_every must be >= 0")
        if not 0.0 <= self.federated_eval_fraction <= 1.0:
            raise ConfigError("federated_eval_fraction must be in [0, 1]")

    @property
    def mode(self) -> str:
        return self.aggregation.mode

    @classmethod
    def from_dict(cls, data: Any) -> TaskConfig:
        if not isinstance(data, dict):
            raise ConfigError("task config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown task config fields: {sorted(unknown)}")
        values = dict(data)
        plan = values.pop("plan", {})
        if not isinstance(plan, dict):
            raise ConfigError("plan must be a JSON object")
        plan_fields = {f.name for f in dataclasses.fields(ClientPlan)}
        if set(plan) - plan_fields:
            raise ConfigError(f"unknown plan fields: {sorted(set(plan) - plan_fields)}")
        try:
            return cls(
                plan=ClientPlan(**plan),
                aggregation=AggregationConfig.from_dict(values.pop("aggregation", {})),
                **values,
            )
        except TypeError as exc:
            raise ConfigError(f"bad task config: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "session_deadline_s": self.session_deadline_s,
            "eval_every": self.eval_every,
            "federated_eval_fraction": self.federated_eval_fraction,
            "plan": dataclasses.asdict(self.plan),
            "aggregation": self.aggregation.to_dict(),
        }
