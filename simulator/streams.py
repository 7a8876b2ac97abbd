"""Per-device numpy random streams without a ``SeedSequence`` per device.

A device's shard is drawn from ``np.random.default_rng(rand.key_seed(seed, device))``.
Building that generator costs ~20 us, most of it numpy's ``SeedSequence`` hashing the
key, which made seeding alone ~a quarter of generating a shard. :class:`DeviceStreams`
computes the same ``SeedSequence`` output for every device at once (vectorised uint32
arithmetic, the algorithm of numpy's ``bit_generator.pyx``), finishes PCG64's seeding
(``pcg64_set_seed``: two 128-bit LCG steps) in Python integers, and sets one shared
``Generator``'s state to it: the draws are bit for bit those of ``default_rng``
(``tests/simulator/test_shards.py`` compares the states and the shards).

The generator is shared: a caller finishes one device's draws before asking for the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator import rand

__all__ = ["DeviceStreams", "seed_sequence_words"]

Array = np.ndarray[Any, Any]

_M32 = 0xFFFFFFFF
_M128 = (1 << 128) - 1
# numpy.random.SeedSequence's constants (pool size 4, 32-bit words)
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG_DEFAULT_MULTIPLIER_128
# rand.key_seed's SplitMix64 finaliser constants
_H0, _GOLDEN = 0x6A09E667F3BCC908, 0x9E3779B97F4A7C15
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _splitmix(z: Array) -> Array:
    """:func:`simulator.rand._mix` over a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    out: Array = z ^ (z >> np.uint64(31))
    return out


def seed_sequence_words(keys: Array) -> list[Array]:
    """``SeedSequence(key).generate_state(4, np.uint64)`` for each 64-bit key, as four
    uint64 arrays (word ``i`` of every key)."""
    keys = np.asarray(keys, dtype=np.uint64)
    lo = (keys & np.uint64(_M32)).astype(np.uint32)
    hi = (keys >> np.uint64(32)).astype(np.uint32)
    hash_const = _INIT_A

    def hashmix(value: Array) -> Array:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_A) & _M32
        value = value * np.uint32(hash_const)
        return value ^ (value >> np.uint32(16))

    def mix(x: Array, y: Array) -> Array:
        result: Array = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        out: Array = result ^ (result >> np.uint32(16))
        return out

    # The entropy of a key below 2**64 is at most two words; the pool's other words
    # hash 0 (a key below 2**32 has one word, and its second would be 0 as well).
    zero = np.zeros_like(lo)
    pool = [hashmix(lo), hashmix(hi), hashmix(zero), hashmix(zero)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    hash_b = _INIT_B
    words = []
    for i in range(8):
        value = pool[i % 4] ^ np.uint32(hash_b)
        hash_b = (hash_b * _MULT_B) & _M32
        value = value * np.uint32(hash_b)
        words.append((value ^ (value >> np.uint32(16))).astype(np.uint64))
    return [words[2 * k] | (words[2 * k + 1] << np.uint64(32)) for k in range(4)]


class DeviceStreams:
    """``np.random.default_rng(rand.key_seed(seed, device))`` for devices ``0..n-1``."""

    def __init__(self, seed: int, devices: int) -> None:
        prefix = rand.key_seed(seed)  # key_seed(seed, d) = _mix(key_seed(seed) ^ d)
        keys = _splitmix(np.uint64(prefix) ^ np.arange(devices, dtype=np.uint64))
        self._words = np.stack(seed_sequence_words(keys), axis=1)  # (devices, 4): 32 B each
        self._bits = np.random.PCG64(0)
        self._rng = np.random.Generator(self._bits)

    def rng(self, device: int) -> np.random.Generator:
        """The shared generator, set to ``device``'s stream from its start."""
        s0, s1, s2, s3 = self._words[device].tolist()
        inc = ((((s2 << 64) | s3) << 1) | 1) & _M128
        state = (((inc + ((s0 << 64) | s1)) & _M128) * _PCG_MULT + inc) & _M128
        self._bits.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": inc},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self._rng
