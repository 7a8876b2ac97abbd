"""Typed reading of one TOML table, with errors that name the key's full path.

Every getter removes the key it read; :meth:`Table.close` then refuses whatever is
left, so a misspelt key in a preset is an error instead of a silently ignored value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from simulator.errors import PresetError

__all__ = ["Table"]

_MISSING: Any = object()


class Table:
    """A TOML table being read; ``where`` is its dotted path (``fleet.tiers[1]``)."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise PresetError(f"{where or 'preset'} must be a table, got {type(data).__name__}")
        self._data = dict(data)
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, message: str) -> PresetError:
        return PresetError(f"{self._path(key)} {message}")

    def has(self, key: str) -> bool:
        return key in self._data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self._data:
            if default is _MISSING:
                raise self.fail(key, "is required")
            return default
        return self._data.pop(key)

    def number(
        self,
        key: str,
        default: float = _MISSING,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        low_open: bool = False,
        allow_inf: bool = False,
    ) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        if allow_inf and value == math.inf:
            return math.inf
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            lo = "(" if low_open else "["
            raise self.fail(key, f"must be in {lo}{low}, {high}], got {value}")
        return float(value)

    def integer(self, key: str, default: int = _MISSING, *, minimum: int = 0) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def string(self, key: str, default: str = _MISSING, *, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {list(choices)}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def numbers(self, key: str, default: tuple[float, ...] = _MISSING) -> tuple[float, ...]:
        value = self.raw(key, default)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        ):
            raise self.fail(key, f"must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def integers(
        self, key: str, default: tuple[int, ...] = _MISSING, *, minimum: int = 1
    ) -> tuple[int, ...]:
        value = self.raw(key, default)
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
        ):
            raise self.fail(key, f"must be a list of integers >= {minimum}, got {value!r}")
        return tuple(value)

    def table(self, key: str) -> Table:
        """The sub-table ``key`` (an empty one when absent)."""
        return Table(self.raw(key, {}), self._path(key))

    def tables(self, key: str) -> list[Table]:
        """The array of tables ``key`` (``[[key]]`` in TOML); required and non-empty."""
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty array of tables")
        return [Table(item, f"{self._path(key)}[{i}]") for i, item in enumerate(value)]

    def rest(self) -> dict[str, Any]:
        """Everything not read yet (the table is then empty)."""
        rest, self._data = self._data, {}
        return rest

    def close(self) -> None:
        """Refuse the keys nobody read."""
        if self._data:
            raise PresetError(f"{self.where or 'preset'} has unknown key(s) {sorted(self._data)}")
