"""The mask service's noise: rounded Gaussian of the std asked, the same per release."""

from __future__ import annotations

import numpy as np
import pytest

from server.secagg.noise import noise_key, rounded_gaussian, subtract_noise


def test_rounded_gaussian_has_the_std_asked_and_is_integer() -> None:
    key = noise_key(b"k" * 32, "t", "r1", 1000.0)

    noise = rounded_gaussian(key, 200_001, 1000.0)

    assert noise.dtype == np.int64 and noise.shape == (200_001,)
    assert float(np.std(noise)) == pytest.approx(1000.0, rel=0.01)
    assert abs(float(np.mean(noise))) < 10.0


def test_the_same_release_gets_the_same_noise_and_another_release_other_noise() -> None:
    a = rounded_gaussian(noise_key(b"k" * 32, "t", "r1", 5.0), 1000, 5.0)
    b = rounded_gaussian(noise_key(b"k" * 32, "t", "r1", 5.0), 1000, 5.0)
    c = rounded_gaussian(noise_key(b"k" * 32, "t", "r2", 5.0), 1000, 5.0)
    d = rounded_gaussian(noise_key(b"x" * 32, "t", "r1", 5.0), 1000, 5.0)

    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_the_server_unmasks_the_sum_plus_the_noise_modulo_2_32() -> None:
    rng = np.random.default_rng(0)
    clear = rng.integers(-(2**20), 2**20, 500)
    mask = rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32)
    total = (clear.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32) + mask
    noise = rounded_gaussian(noise_key(b"k" * 32, "t", "r", 50.0), 500, 50.0)
    mask_sum = mask.copy()

    subtract_noise(mask_sum, noise)
    unmasked = (total - mask_sum).view(np.int32).astype(np.int64)

    assert np.array_equal(unmasked, clear + noise)
