"""A task's configuration: who trains (concurrency), how (client plan), and how the
server aggregates (:class:`~server.aggregation.AggregationConfig`).

JSON form, as the admin API takes it (every field optional)::

    {"concurrency": 100, "session_deadline_s": 240, "eval_every": 1,
     "plan": {"lr": 0.1, "batch_size": 32, "epochs": 1, "max_steps": null,
              "time_budget_s": null},
     "aggregation": {"mode": "async", "aggregation_goal": 10, ...},
     "privacy": {"target_epsilon": 8, "delta": 1e-5, "noise_multiplier": "auto", ...}}

With ``privacy`` (:mod:`server.privacy`) the aggregation's ``noise_multiplier`` is the
budget's (calibrated when ``"auto"``); ``to_dict`` shows the resolved one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from server.aggregation import AggregationConfig
from server.errors import ConfigError
from server.privacy import PrivacyBudget, PrivacyConfig
from server.secagg.config import SecureAggregation

MAX_DEADLINE_S = 30 * 86400.0
MAX_COUNT = 10**9


def _int(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _real(name: str, value: Any, low: float, high: float, *, open_low: bool = True) -> None:
    """A finite number in ``(low, high]`` (``[low, high]`` when not ``open_low``)."""
    ok = type(value) in (int, float) and -1e300 < value < 1e300 and not math.isnan(value)
    if not (ok and (low < value if open_low else low <= value) and value <= high):
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"{name} must be a finite number in {interval}, got {value!r}")


def _as_float(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None:
        object.__setattr__(obj, name, float(value))


@dataclass(frozen=True)
class ClientPlan:
    """What a device is asked to do in one session (sent at check-in)."""

    lr: float = 0.1
    batch_size: int = 32
    epochs: int = 1
    max_steps: int | None = None
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        _real("plan.lr", self.lr, 0.0, 1e3)
        _int("plan.batch_size", self.batch_size, 1, 65536)
        _int("plan.epochs", self.epochs, 1, 1000)
        if self.max_steps is not None:
            _int("plan.max_steps", self.max_steps, 1, MAX_COUNT)
        if self.time_budget_s is not None:
            _real("plan.time_budget_s", self.time_budget_s, 0.0, MAX_DEADLINE_S)
        _as_float(self, "lr")
        _as_float(self, "time_budget_s")


@dataclass(frozen=True)
class TaskConfig:
    concurrency: int = 100
    session_deadline_s: float | None = None  # None: the server's default
    eval_every: int = 1  # evaluate every N-th version on the held-out set (0: never)
    federated_eval_fraction: float = 0.0  # share of check-ins asked to evaluate on-device
    plan: ClientPlan = field(default_factory=ClientPlan)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    secure_aggregation: SecureAggregation | None = None
    privacy: PrivacyConfig | None = None

    def __post_init__(self) -> None:
        _int("concurrency", self.concurrency, 1, 10_000_000)
        if self.session_deadline_s is not None:
            _real("session_deadline_s", self.session_deadline_s, 0.0, MAX_DEADLINE_S)
        _int("eval_every", self.eval_every, 0, MAX_COUNT)
        _real("federated_eval_fraction", self.federated_eval_fraction, 0.0, 1.0, open_low=False)
        if not isinstance(self.plan, ClientPlan):
            raise ConfigError("plan must be a ClientPlan")
        if not isinstance(self.aggregation, AggregationConfig):
            raise ConfigError("aggregation must be an AggregationConfig")
        _as_float(self, "session_deadline_s")
        _as_float(self, "federated_eval_fraction")
        budget = None
        if self.privacy is not None:
            if not isinstance(self.privacy, PrivacyConfig):
                raise ConfigError("privacy must be a PrivacyConfig")
            budget = PrivacyBudget.resolve(self.privacy, self.aggregation)
            given = self.aggregation.noise_multiplier
            if given not in (0.0, budget.noise_multiplier):
                raise ConfigError(
                    f"aggregation.noise_multiplier {given:g} disagrees with the privacy "
                    f"budget's {budget.noise_multiplier:g}: set it in privacy only"
                )
            object.__setattr__(
                self,
                "aggregation",
                dataclasses.replace(self.aggregation, noise_multiplier=budget.noise_multiplier),
            )
        object.__setattr__(self, "_budget", budget)
        if self.secure_aggregation is not None:
            self.secure_aggregation.check(self.aggregation)

    @property
    def budget(self) -> PrivacyBudget | None:
        """The resolved privacy budget, None without ``privacy``."""
        budget: PrivacyBudget | None = getattr(self, "_budget", None)
        return budget

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
            raise ConfigError(f"unknown task config fields: {sorted(unknown, key=str)}")
        values = dict(data)
        aggregation = values.pop("aggregation", {})
        if not isinstance(aggregation, dict):
            raise ConfigError("aggregation must be a JSON object")
        privacy = values.pop("privacy", None)
        if privacy is not None:
            values["privacy"] = PrivacyConfig.from_dict(privacy)
        secure = values.pop("secure_aggregation", None)
        if secure is not None:
            values["secure_aggregation"] = SecureAggregation.from_dict(secure)
        plan = values.pop("plan", {})
        if not isinstance(plan, dict):
            raise ConfigError("plan must be a JSON object")
        plan_fields = {f.name for f in dataclasses.fields(ClientPlan)}
        if set(plan) - plan_fields:
            raise ConfigError(f"unknown plan fields: {sorted(set(plan) - plan_fields, key=str)}")
        try:
            return cls(
                plan=ClientPlan(**plan),
                aggregation=AggregationConfig.from_dict(aggregation),
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
            "secure_aggregation": (
                None if self.secure_aggregation is None else self.secure_aggregation.to_dict()
            ),
            "privacy": None if self.privacy is None else self.privacy.to_dict(),
        }
