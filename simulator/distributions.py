"""The random draws a fleet is built from: device speeds and shard sizes."""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator.config import DataConfig, SpeedConfig

__all__ = ["sample_shard_sizes", "sample_speeds"]

Array = np.ndarray[Any, Any]

# No device is infinitely fast: a half-normal draw of 0 would make training free.
_MIN_SECONDS_PER_EXAMPLE = 1e-6


def sample_speeds(cfg: SpeedConfig, rng: np.random.Generator, n: int) -> Array:
    """``n`` seconds-per-example values (float64) drawn from ``cfg``."""
    if cfg.kind == "lognormal":
        out = cfg.median_s * np.exp(cfg.sigma * rng.standard_normal(n))
    elif cfg.kind == "halfnormal":
        out = cfg.min_s + np.abs(rng.normal(0.0, cfg.scale_s, n))
    elif cfg.kind == "trace":
        out = rng.choice(np.asarray(cfg.values, dtype=np.float64), size=n)
    else:  # pragma: no cover - the config parser only lets the kinds above through
        raise ValueError(f"unknown speed distribution {cfg.kind!r}")
    return np.maximum(out, _MIN_SECONDS_PER_EXAMPLE)


def sample_shard_sizes(cfg: DataConfig, rng: np.random.Generator, n: int) -> Array:
    """``n`` shard sizes (int64): lognormal around ``size_median``, clipped to the bounds."""
    raw = cfg.size_median * np.exp(cfg.size_sigma * rng.standard_normal(n))
    return np.clip(np.rint(raw), cfg.min_size, cfg.max_size).astype(np.int64)
