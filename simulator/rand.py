"""Counter-based random numbers: the k-th session of device d draws the same values in
every mode and every event order (common random numbers make the async/sync comparison
less noisy), at about a microsecond a draw and with no generator state to carry.

``key_seed(*key)`` hashes a key to 64 bits; ``uniform(h, tag)``, ``pair(h, tag)`` and
``normal(h, tag)`` derive independent draws from such a hash, one set per tag.
"""

from __future__ import annotations

import math

__all__ = ["extend", "key_seed", "normal", "pair", "uniform"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_INV32 = 1.0 / (1 << 32)


def _mix(z: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit ints with good avalanche."""
    z = (z + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def key_seed(*key: int) -> int:
    """A 64-bit value determined by the integers in ``key`` (order matters)."""
    h = 0x6A09E667F3BCC908
    for part in key:
        h = _mix(h ^ (part & _MASK))
    return h


def extend(h: int, part: int) -> int:
    """``key_seed(*key, part)`` from ``h = key_seed(*key)``: one mix, so a caller can
    keep the hash of a key's prefix."""
    return _mix(h ^ (part & _MASK))


def uniform(h: int, tag: int) -> float:
    """A float in [0, 1) determined by the hash ``h`` and ``tag``."""
    return (_mix(h ^ ((tag * _GOLDEN) & _MASK)) >> 11) * (1.0 / (1 << 53))


def pair(h: int, tag: int) -> tuple[float, float]:
    """Two floats in [0, 1) (32-bit resolution) from one hash of ``h`` and ``tag``."""
    z = _mix(h ^ ((tag * _GOLDEN) & _MASK))
    return (z >> 32) * _INV32, (z & 0xFFFFFFFF) * _INV32


def normal(h: int, tag: int) -> float:
    """A standard normal draw determined by ``h`` and ``tag`` (Box-Muller)."""
    u1, u2 = pair(h, tag)
    return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)
