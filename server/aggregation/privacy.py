"""Per-update L2 clipping, the sensitivity of a version, and central Gaussian noise.

Clipping never materialises a clipped copy: the fold multiplies the update's weight by
``scale = min(1, C / norm)``. The noise of a version made of ``n`` updates has std
``noise_multiplier * sensitivity(config, n)``: the most one device's update can move
the pseudo-gradient (zero-out adjacency: the device's update is replaced by one that
contributes nothing, the number of slots ``n`` is public). With weights ``w = s * e``
(staleness ``s``, example weight ``e``) and ``w_max``, ``w_min`` their bounds:

- ``normalization = "goal"``: ``sum(w_i x_i) / n``, so ``C * w_max / n``;
- ``normalization = "weights"``: ``sum(w_i x_i) / sum(w_i)``; removing device ``u``
  moves it by ``w_u (x_u - m') / (W' + w_u)`` with ``|x_u - m'| <= 2C`` and
  ``W' >= (n - 1) w_min``, so ``2C w_max / (w_max + (n - 1) w_min)``.

The staleness bounds are taken over every staleness (the leader's copy of the config
has no staleness bound), the example bounds over ``1..cap``; without a cap, ``linear``,
``sqrt`` and ``log`` weights have no bound and noise is refused by the config.
Noise is drawn from a PCG64 generator whose state is part of the aggregator snapshot,
so a restored aggregator draws the same noise; the server seeds it from the OS's
CSPRNG for a DP task (:func:`secret_seed`), never from the published ``seed``.
Epsilon is :mod:`server.privacy`'s business.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from server.aggregation import blas
from server.aggregation.config import AggregationConfig
from server.aggregation.validation import Flat

__all__ = [
    "GaussianNoise",
    "WeightBounds",
    "clip_by_norm",
    "clip_scale",
    "secret_seed",
    "sensitivity",
    "weight_bounds",
]


class WeightBounds(NamedTuple):
    """The largest and smallest weight ``s * e`` any update can get."""

    high: float
    low: float


def weight_bounds(config: AggregationConfig) -> WeightBounds:
    """``(w_max, w_min)`` over every staleness and every example count (ConfigError-free:
    an unbounded example weight gives ``inf``)."""
    st, ew = config.staleness, config.example_weighting
    s_high = 1.0  # every rule gives 1 at s = 0 and never increases
    decays = (
        (st.kind == "polynomial" and st.exponent > 0)
        or (st.kind == "hinge" and st.a > 0)
        or st.kind == "nvflare"
    )
    s_low = 0.0 if decays else 1.0
    cap = ew.cap
    if ew.kind == "equal":
        e_high, e_low = 1.0, 1.0
    elif cap is None:
        e_high, e_low = math.inf, 1.0
    elif ew.kind == "linear":
        e_high, e_low = float(cap), 1.0
    elif ew.kind == "sqrt":
        e_high, e_low = math.sqrt(cap), 1.0
    else:
        e_high, e_low = math.log10(1 + cap), math.log10(2)
    return WeightBounds(s_high * e_high, s_low * e_low)


def sensitivity(config: AggregationConfig, n: int) -> float:
    """The L2 sensitivity of the pseudo-gradient of a version made of ``n`` updates."""
    if config.clip_norm is None:
        return math.inf
    c, (high, low) = config.clip_norm, weight_bounds(config)
    if n < 1 or math.isinf(high):
        return math.inf
    if config.normalization == "goal":
        return c * high / n
    return 2.0 * c * high / (high + (n - 1) * low)


def secret_seed() -> int:
    """128 bits from the OS's CSPRNG: a noise seed nobody can read from the config."""
    return secrets.randbits(128)


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
