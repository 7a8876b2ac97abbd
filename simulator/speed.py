"""How close the batched training step is to the machine's limit, measured in the run.

:class:`~simulator.batched.DenseBatchTrainer` counts the FLOPs of its matrix products
(2 x m x k x n each: forward, weight gradient and, past the first layer, the gradient
through the layer) and the seconds its batched calls took; after every few calls it
times a plain float32 ``np.matmul`` of that call's heaviest product (contiguous operands,
nothing around it; for a first step the group's whole forward product, the fastest shape
its FLOPs come in), so the baseline is measured on the machine as loaded as the run saw
it (these machines are shared). :func:`training_speed` reports both rates and the
fraction; :func:`gate_report` the configurations the gate checked. Both read
:class:`TrainerStats`, the counters a trainer hands back from a worker process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TrainerStats", "gate_report", "plain_matmul_seconds", "training_speed"]


@dataclass
class TrainerStats:
    """A batched trainer's counters (plain values: they travel between processes)."""

    flops: float = 0.0
    seconds: float = 0.0
    matmul_flops: float = 0.0
    matmul_s: float = 0.0
    gate: dict[tuple[float, int, int], Any] = field(default_factory=dict)


_REPEATS = 3  # the mean of three calls: timed as the training calls are (not the best)


def plain_matmul_seconds(g: int, m: int, k: int, n: int) -> float:
    """Seconds one float32 ``np.matmul`` of (g, m, k) by (g, k, n) takes here (the mean
    of a few, after a warm-up)."""
    a = np.full((g, m, k), 0.5, dtype=np.float32)
    b = np.full((g, k, n), 0.25, dtype=np.float32)
    out = np.empty((g, m, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    started = time.perf_counter()
    for _ in range(_REPEATS):
        np.matmul(a, b, out=out)
    return (time.perf_counter() - started) / _REPEATS


def training_speed(trainers: Sequence[Any]) -> dict[str, Any] | None:
    """FLOP rate of the batched steps, the plain-matmul rate measured alongside, and
    their ratio (None when no batched training ran)."""
    batched = [t for t in trainers if getattr(t, "seconds", 0.0) > 0]
    if not batched:
        return None
    flops = sum(t.flops for t in batched)
    seconds = sum(t.seconds for t in batched)
    matmul_flops = sum(t.matmul_flops for t in batched)
    matmul_s = sum(t.matmul_s for t in batched)
    rate = flops / seconds
    matmul_rate = matmul_flops / matmul_s if matmul_s > 0 else None
    return {
        "gflops": rate / 1e9,
        "matmul_gflops": None if matmul_rate is None else matmul_rate / 1e9,
        "matmul_fraction": None if matmul_rate is None else rate / matmul_rate,
        "train_s": seconds,
    }


def gate_report(trainers: Sequence[Any]) -> list[dict[str, Any]]:
    """Every configuration the batched trainers were gated at (merged over seeds: the
    worst difference, all jobs, ``trainer`` if any seed fell back)."""
    merged: dict[tuple[float, int, int], dict[str, Any]] = {}
    for t in trainers:
        for key, g in getattr(t, "gate", {}).items():
            row = merged.setdefault(key, {**g.to_dict(), "rel_diff": 0.0, "jobs": 0})
            row["rel_diff"] = max(row["rel_diff"], g.rel_diff)
            row["jobs"] += g.jobs
            if g.path == "trainer":
                row["path"] = "trainer"
    return [merged[k] for k in sorted(merged)]
