"""Local privacy measures applied to an update before it leaves the device."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from client_sdk.data import Array


def global_norm(tensors: Sequence[Array]) -> float:
    """The L2 norm of all tensors taken together (float64 accumulation)."""
    return math.sqrt(sum(float(np.dot(t.ravel(), t.ravel())) for t in tensors))


def clip_by_global_norm(tensors: Sequence[Array], max_norm: float) -> tuple[list[Array], float]:
    """Scale the tensors so their global L2 norm is at most ``max_norm``.

    Returns the (possibly scaled) tensors and the norm before clipping. Scaling every
    tensor by the same factor keeps the update's direction.
    """
    norm = global_norm(tensors)
    if norm <= max_norm or norm == 0.0:
        return list(tensors), norm
    scale = np.float32(max_norm / norm)
    return [np.multiply(t, scale, dtype=np.float32) for t in tensors], norm
