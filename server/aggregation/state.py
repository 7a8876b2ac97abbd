"""Aggregator state as plain values: what :meth:`AggregatorBase.state` returns.

A state is a dict of ints, floats, strings, lists, dicts and float32 numpy arrays; no
bytes format lives here (the server's storage layer turns a state into bytes and back,
in the wire format). A restored aggregator continues bit-identically: floats are kept
as Python floats (float64) and arrays byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.aggregation.validation import Flat
from server.errors import AsyncflError

__all__ = ["SnapshotError", "checked_array"]


class SnapshotError(AsyncflError):
    """A state (or its stored bytes) that is corrupt, of another format or of another kind."""

    code = "invalid_snapshot"


def checked_array(obj: Any, *, where: str, size: int | None = None) -> Flat | None:
    """A writable float32 copy of a state's array (None stays None)."""
    if obj is None:
        return None
    if not isinstance(obj, np.ndarray) or obj.dtype != np.float32 or obj.ndim != 1:
        raise SnapshotError(f"state {where}: expected a flat float32 array")
    if size is not None and obj.size != size:
        raise SnapshotError(f"state {where}: {obj.size} values, expected {size}")
    return obj.copy()
