"""A task's differential-privacy budget: what it may spend and how it is accounted.

JSON form (in the task config, next to ``aggregation``)::

    "privacy": {"target_epsilon": 8.0, "delta": 1e-5, "noise_multiplier": "auto",
                "planned_versions": 200, "min_separation": 5}

``noise_multiplier`` is a number, or ``"auto"``: the smallest one with which
``planned_versions`` versions stay within ``target_epsilon`` (the library's calibration).
``min_separation`` is the participation limit the accounting relies on: a device checks
in at most once every ``min_separation`` versions (enforced at check-in). Epsilon is
accounted with RDP (``dp_accounting.rdp``); PLD is tighter but takes seconds per
evaluation here, too slow for a config check (:class:`~server.privacy.Accountant` can
still report it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from server.errors import ConfigError

__all__ = ["PrivacyConfig"]

AccountantKind = Literal["rdp", "pld"]
KEYS: Final = (
    "target_epsilon",
    "delta",
    "noise_multiplier",
    "planned_versions",
    "min_separation",
)
MAX_VERSIONS: Final = 10**7


def _fail(message: str) -> ConfigError:
    return ConfigError(f"privacy: {message}")


def _positive(name: str, value: Any, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{name} must be a finite number, got {value!r}")
    if not 0 < value <= high:
        raise _fail(f"{name} must be in (0, {high}], got {value}")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSIONS:
        raise _fail(f"{name} must be an integer in 1..{MAX_VERSIONS}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    target_epsilon: float
    delta: float = 1e-5
    noise_multiplier: float | Literal["auto"] = "auto"
    planned_versions: int | None = None
    min_separation: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "target_epsilon", _positive("target_epsilon", self.target_epsilon, 1e3)
        )
        delta = _positive("delta", self.delta, 1.0)
        if delta >= 1.0:
            raise _fail(f"delta must be below 1, got {delta}")
        object.__setattr__(self, "delta", delta)
        if self.noise_multiplier == "auto":
            if self.planned_versions is None:
                raise _fail('noise_multiplier "auto" needs planned_versions to calibrate for')
        else:
            z = _positive("noise_multiplier", self.noise_multiplier, 1e4)
            object.__setattr__(self, "noise_multiplier", z)
        if self.planned_versions is not None:
            _count("planned_versions", self.planned_versions)
        _count("min_separation", self.min_separation)

    @classmethod
    def from_dict(cls, data: Any) -> PrivacyConfig:
        if not isinstance(data, dict):
            raise _fail("must be a JSON object")
        unknown = sorted(set(data) - set(KEYS), key=str)
        if unknown:
            raise _fail(f"unknown key(s) {unknown} (allowed: {sorted(KEYS)})")
        if "target_epsilon" not in data:
            raise _fail("target_epsilon is required")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in KEYS}
