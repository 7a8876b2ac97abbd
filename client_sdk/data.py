"""Where local examples come from: the :class:`DataSource` protocol and an in-memory one.

A data source yields ``(x, y)`` numpy batches, one pass per call; the client calls it
once per planned epoch with a different seed. Examples never leave the device: only
the update computed from them is uploaded. See :mod:`client_sdk.examples` for the
on-device SQLite example store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from client_sdk.errors import ConfigError

Array = np.ndarray[Any, Any]
Batch = tuple[Array, Array]


@runtime_checkable
class DataSource(Protocol):
    def count(self) -> int:
        """How many examples one pass yields."""
        ...

    def batches(self, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        """One pass over the examples in batches of ``batch_size`` (the last may be
        smaller), shuffled when ``seed`` is given. May be iterated from a worker thread."""
        ...


class ArrayDataSource:
    """Examples held in memory as two arrays with the same number of rows."""

    def __init__(self, x: Array, y: Array) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or len(x) != len(y):
            raise ConfigError(f"x and y need the same number of rows, got {len(x)} and {len(y)}")
        self.x, self.y = x, y

    def count(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self.x)
        order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], self.y[idx]
