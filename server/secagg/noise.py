"""Gaussian noise the mask service adds to a release, so the server never sees an
un-noised sum (differential privacy with secure aggregation).

The server unmasks ``total - mask_sum``; the service answers ``mask_sum - r`` instead,
so the server gets ``sum(w_i q_i) + r`` with ``r = round(N(0, std^2))`` per coordinate.
Rounding the noise of an integer sum is rounding the continuous Gaussian mechanism's
output (``round(S + N) = S + round(N)`` for integer ``S``), post-processing, so it keeps
the continuous Gaussian's guarantee; the sum modulo 2**32 is post-processing as well.

The normals come from a ChaCha20 stream (:func:`client_sdk.secagg.expand_mask`, the
``cryptography`` package) keyed by HKDF-SHA256 of the service's private key, the task,
the release and the std: the same release asked twice gets the same noise (averaging
two answers cannot thin it), and nobody without the service's key can predict it. They
are made by the Box-Muller transform in float64 (53-bit uniforms): floating-point
sampling, whose known attacks target the low bits of a float output, which rounding to
integers of std far above 1 discards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client_sdk.secagg import expand_mask

__all__ = ["noise_key", "rounded_gaussian", "subtract_noise"]


def noise_key(secret: bytes, task_id: str, release_id: str, std: float) -> bytes:
    info = f"asyncfl dp noise|{task_id}|{release_id}|{std!r}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def rounded_gaussian(key: bytes, size: int, std: float) -> np.ndarray[Any, Any]:
    """``size`` int64 draws of ``round(N(0, std^2))`` from the stream of ``key``."""
    words = expand_mask(key, 4 * ((size + 1) // 2)).astype(np.uint64)
    # two 53-bit uniforms per pair of normals, in (0, 1]: log never sees 0
    bits = (words[0::2] << np.uint64(21)) ^ (words[1::2] >> np.uint64(11))
    u = ((bits & np.uint64((1 << 53) - 1)).astype(np.float64) + 1.0) / float(1 << 53)
    u1, u2 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return np.rint(normals[:size] * std).astype(np.int64)


def subtract_noise(mask_sum: np.ndarray[Any, Any], noise: np.ndarray[Any, Any]) -> None:
    """``mask_sum -= noise`` modulo 2**32, in place (the server then sees ``+ noise``)."""
    np.subtract(mask_sum, (noise & 0xFFFFFFFF).astype(np.uint32), out=mask_sum)
