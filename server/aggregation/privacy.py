"""Per-update L2 clipping and central Gaussian noise on the aggregate.

Clipping never materialises a clipped copy: the fold multiplies the update's weight by
``scale = min(1, C / norm)``. Noise of std ``noise_multiplier * C / K`` is drawn from a
seeded PCG64 generator whose state is part of the aggregator snapshot, so a restored
aggregator draws the same noise. No privacy accounting here (epsilon comes later).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.aggregation import blas
from server.aggregation.validation import Flat

__all__ = ["GaussianNoise", "clip_by_norm", "clip_scale"]


def clip_scale(norm: float, clip_norm: float | None) -> tuple[float, bool]:
    """``(scale, clipped)``: the factor bringing an update of ``norm`` within ``clip_norm``."""
    if clip_norm is None or norm <= clip_norm:
        return 1.0, False
    return clip_norm / norm, True


def clip_by_norm(
    tensors: Sequence[np.ndarray[Any, Any]], clip_norm: float
) -> tuple[float, float, bool]:
    """``(norm, scale, clipped)`` for clipping ``tensors`` to L2 norm ``clip_norm``.

    The inputs are not modified; multiply them by ``scale`` to clip. ``scale <= 1``,
    so clipping never increases a norm.
    """
    sq = 0.0
    for t in tensors:
        wide = np.asarray(t, dtype=np.float64).ravel()
        sq += float(np.dot(wide, wide))
    norm = math.sqrt(sq)
    scale, clipped = clip_scale(norm, clip_norm)
    return norm, scale, clipped


class GaussianNoise:
    """Adds N(0, std^2) float32 noise in place, from a generator seeded once."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._scratch: Flat | None = None

    def add(self, target: Flat, std: float) -> None:
        """``target += std * N(0, 1)``, drawing ``target.size`` float32 normals."""
        if self._scratch is None or self._scratch.size != target.size:
            self._scratch = np.empty(target.size, dtype=np.float32)
        self._rng.standard_normal(dtype=np.float32, out=self._scratch)
        blas.add_scaled(target, self._scratch, std)

    def state(self) -> dict[str, Any]:
        """The generator state, JSON/msgpack friendly (128-bit ints as decimal strings)."""
        raw = self._rng.bit_generator.state
        inner = raw["state"]
        return {
            "state": str(inner["state"]),
            "inc": str(inner["inc"]),
            "has_uint32": int(raw["has_uint32"]),
            "uinteger": int(raw["uinteger"]),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(state["state"]), "inc": int(state["inc"])},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }
