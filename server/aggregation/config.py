"""Per-task aggregation configuration: one frozen, validated value with a JSON form.

``AggregationConfig.from_dict`` accepts the JSON form (unknown keys and bad values raise
:class:`~server.errors.ConfigError` naming the key), ``to_dict`` returns it, and the two
round-trip. Constructing the dataclasses directly runs the same checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from server.errors import ConfigError

__all__ = [
    "AggregationConfig",
    "ExampleWeightingConfig",
    "OptimizerConfig",
    "StalenessConfig",
]

Mode = Literal["async", "sync"]
Normalization = Literal["goal", "weights"]
StalenessKind = Literal["polynomial", "constant", "hinge", "nvflare"]
WeightingKind = Literal["equal", "linear", "sqrt", "log"]
OptimizerName = Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]

ADAPTIVE: Final = ("fedadam", "fedyogi", "fedadagrad")

# Keys each variant accepts in its JSON form (besides "kind" / "name").
_STALENESS_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "polynomial": ("exponent",),
    "constant": (),
    "hinge": ("a", "b"),
    "nvflare": (),
}
_OPTIMIZER_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "fedavg": ("lr",),
    "fedavgm": ("lr", "momentum"),
    **dict.fromkeys(ADAPTIVE, ("lr", "beta1", "beta2", "tau")),
}
_OPTIMIZER_DEFAULTS: Final[dict[str, dict[str, float]]] = {
    "fedavg": {"lr": 1.0},
    "fedavgm": {"lr": 1.0, "momentum": 0.9},
    **{name: {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3} for name in ADAPTIVE},
}


def _number(obj: object, name: str, where: str, **bounds: Any) -> None:
    """Check the float field ``name`` and store it as a float (ints are accepted)."""
    object.__setattr__(obj, name, _float(where, getattr(obj, name), **bounds))


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"aggregation config: {where} {message}")


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise _fail(where, f"must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise _fail(where, f"has unknown key(s) {unknown} (allowed: {sorted(allowed)})")


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(where, f"must be one of {list(choices)}, got {value!r}")
    return cast(str, value)


def _int(where: str, value: Any, *, minimum: int, maximum: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise _fail(where, f"must be in [{minimum}, {maximum}], got {value}")
    return value


def _float(
    where: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise _fail(where, f"must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise _fail(where, f"must be in {lo}{low}, {high}{hi}, got {value}")
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


@dataclass(frozen=True, slots=True)
class StalenessConfig:
    """How an update's staleness ``s`` discounts it (see :mod:`.staleness`)."""

    kind: StalenessKind = "polynomial"
    exponent: float = 0.5
    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        _choice("staleness.kind", self.kind, tuple(_STALENESS_KEYS))
        _number(self, "exponent", "staleness.exponent", low=0.0)
        _number(self, "a", "staleness.a", low=0.0)
        _int("staleness.b", self.b, minimum=0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StalenessConfig:
        _check_keys("staleness", data, ("kind", "exponent", "a", "b"))
        kind = _choice("staleness.kind", data.get("kind", "polynomial"), tuple(_STALENESS_KEYS))
        _check_keys(f"staleness ({kind})", data, ("kind", *_STALENESS_KEYS[kind]))
        return cls(**{**data, "kind": kind})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: getattr(self, k) for k in _STALENESS_KEYS[self.kind]}}


@dataclass(frozen=True, slots=True)
class ExampleWeightingConfig:
    """How an update's example count ``n`` weighs it (see :mod:`.weights`)."""

    kind: WeightingKind = "equal"
    cap: int | None = None

    def __post_init__(self) -> None:
        _choice("example_weighting.kind", self.kind, ("equal", "linear", "sqrt", "log"))
        if self.cap is not None:
            _int("example_weighting.cap", self.cap, minimum=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExampleWeightingConfig:
        _check_keys("example_weighting", data, ("kind", "cap"))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cap": self.cap}


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    """Server optimizer and its hyperparameters (see :mod:`.optimizers`).

    Defaults depend on ``name`` (fedavg: lr 1; fedavgm: lr 1, momentum 0.9; adaptive:
    lr 0.01, beta1 0.9, beta2 0.99, tau 1e-3); build it with :meth:`of` or from_dict.
    """

    name: OptimizerName = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _choice("optimizer.name", self.name, tuple(_OPTIMIZER_KEYS))
        _number(self, "lr", "optimizer.lr", low=0.0, low_open=True)
        _number(self, "momentum", "optimizer.momentum", low=0.0, high=1.0, high_open=True)
        _number(self, "beta1", "optimizer.beta1", low=0.0, high=1.0, high_open=True)
        _number(self, "beta2", "optimizer.beta2", low=0.0, high=1.0, high_open=True)
        _number(self, "tau", "optimizer.tau", low=0.0, low_open=True)

    @classmethod
    def of(cls, name: str, **params: float) -> OptimizerConfig:
        """The optimizer ``name`` with its own defaults, overridden by ``params``."""
        return cls.from_dict({"name": name, **params})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizerConfig:
        _check_keys("optimizer", data, ("name", "lr", "momentum", "beta1", "beta2", "tau"))
        name = _choice("optimizer.name", data.get("name", "fedavg"), tuple(_OPTIMIZER_KEYS))
        _check_keys(f"optimizer ({name})", data, ("name", *_OPTIMIZER_KEYS[name]))
        return cls(**{**_OPTIMIZER_DEFAULTS[name], **data, "name": name})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: getattr(self, k) for k in _OPTIMIZER_KEYS[self.name]}}


_NESTED: Final[dict[str, type[StalenessConfig | ExampleWeightingConfig | OptimizerConfig]]] = {
    "staleness": StalenessConfig,
    "example_weighting": ExampleWeightingConfig,
    "optimizer": OptimizerConfig,
}


@dataclass(frozen=True, slots=True)
class AggregationConfig:
    """Everything that decides how a task's updates become model versions.

    ``dedup_window`` is how many consumed update ids :meth:`has_folded` remembers
    beyond the open buffer. The last four fields only matter in sync mode.
    """

    mode: Mode = "async"
    aggregation_goal: int = 10
    normalization: Normalization = "goal"
    staleness: StalenessConfig = field(default_factory=StalenessConfig)
    max_staleness: int | None = 100
    example_weighting: ExampleWeightingConfig = field(default_factory=ExampleWeightingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    max_update_norm: float | None = None
    seed: int = 0
    dedup_window: int = 10_000
    over_selection: float = 0.3
    round_timeout_s: float = 240.0
    min_round_fraction: float = 0.0

    def __post_init__(self) -> None:
        _choice("mode", self.mode, ("async", "sync"))
        _int("aggregation_goal", self.aggregation_goal, minimum=1)
        _choice("normalization", self.normalization, ("goal", "weights"))
        for key, kind in _NESTED.items():
            if not isinstance(getattr(self, key), kind):
                raise _fail(key, f"must be a {kind.__name__}")
        if self.max_staleness is not None:
            _int("max_staleness", self.max_staleness, minimum=0)
        if self.clip_norm is not None:
            _number(self, "clip_norm", "clip_norm", low=0.0, low_open=True)
        _number(self, "noise_multiplier", "noise_multiplier", low=0.0)
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise _fail("noise_multiplier", "> 0 requires clip_norm (noise std is z * C * ...)")
        weighting = self.example_weighting
        if self.noise_multiplier > 0 and weighting.kind != "equal" and weighting.cap is None:
            raise _fail(
                "noise_multiplier",
                f"> 0 with {weighting.kind!r} example weights needs example_weighting.cap: "
                "without it one device's weight, and so its influence on a version, has no "
                "bound, and no noise can hide it",
            )
        if self.max_update_norm is not None:
            _number(self, "max_update_norm", "max_update_norm", low=0.0, low_open=True)
        _int("seed", self.seed, minimum=0)
        _int("dedup_window", self.dedup_window, minimum=0)
        _number(self, "over_selection", "over_selection", low=0.0)
        _number(self, "round_timeout_s", "round_timeout_s", low=0.0, low_open=True)
        _number(self, "min_round_fraction", "min_round_fraction", low=0.0, high=1.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AggregationConfig:
        """Parse and validate the JSON form; missing keys take their defaults."""
        _check_keys("top level", data, tuple(cls.__dataclass_fields__))
        values = dict(data)
        for key, kind in _NESTED.items():
            if key in values and not isinstance(values[key], kind):
                values[key] = kind.from_dict(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts, ints, floats, strings and None)."""
        out: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            out[key] = value.to_dict() if key in _NESTED else value
        return out
