"""How close the batched training step is to the machine's limit, measured in the run.

:class:`~simulator.batched.DenseBatchTrainer` counts the FLOPs of its matrix products
(2 x m x k x n each: forward, weight gradient and, past the first layer, the gradient
through the layer) and the seconds its batched calls took, and notes how often each
matmul shape ran. :func:`training_speed` then times a plain float32 ``np.matmul`` of
the same shapes (contiguous stacks, nothing else around it) in the same process, so
both rates come from the same machine in the same minute, and reports the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from simulator.batched import DenseBatchTrainer

__all__ = ["gate_report", "matmul_seconds", "training_speed"]

_BUDGET_S = 0.1  # wall time spent timing each shape


def matmul_seconds(g: int, m: int, k: int, n: int) -> float:
    """Seconds one plain float32 ``np.matmul`` of (g, m, k) by (g, k, n) takes here."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((g, m, k), dtype=np.float32)
    b = rng.standard_normal((g, k, n), dtype=np.float32)
    out = np.empty((g, m, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up
    calls, started = 0, time.perf_counter()
    while True:
        np.matmul(a, b, out=out)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= _BUDGET_S or calls >= 10_000:
            return elapsed / calls


def training_speed(trainers: Sequence[Any]) -> dict[str, Any] | None:
    """FLOP rate of the batched steps, the plain-matmul rate of the same shapes, and
    their ratio (None when no batched trainer ran)."""
    batched = [t for t in trainers if isinstance(t, DenseBatchTrainer) and t.seconds > 0]
    if not batched:
        return None
    # A stacked matmul's rate depends on its matrix shape (m, k, n) far more than on
    # the stack height g, so the shapes are pooled by (m, k, n) and each pool is timed
    # at its FLOP-weighted mean height: every counted FLOP is covered.
    pools: dict[tuple[int, int, int], list[float]] = {}
    for t in batched:
        for (g, m, k, n), c in t.shapes.items():
            pool = pools.setdefault((m, k, n), [0.0, 0.0])
            pool[0] += 2.0 * c * g * m * k * n  # FLOPs
            pool[1] += 2.0 * c * g * g * m * k * n  # FLOPs x g, for the weighted mean g
    flops = sum(t.flops for t in batched)
    seconds = sum(t.seconds for t in batched)
    timed_flops = timed_s = 0.0
    for (m, k, n), (pool_flops, weighted) in sorted(pools.items(), key=lambda kv: -kv[1][0]):
        g = max(1, round(weighted / pool_flops))
        timed_s += pool_flops / (2.0 * g * m * k * n) * matmul_seconds(g, m, k, n)
        timed_flops += pool_flops
    matmul_rate = timed_flops / timed_s if timed_s > 0 else None
    rate = flops / seconds
    return {
        "gflops": rate / 1e9,
        "matmul_gflops": None if matmul_rate is None else matmul_rate / 1e9,
        "matmul_fraction": None if matmul_rate is None else rate / matmul_rate,
        "train_s": seconds,
        "shapes_timed": len(pools),
    }


def gate_report(trainers: Sequence[Any]) -> list[dict[str, Any]]:
    """Every configuration the batched trainers were gated at (merged over seeds: the
    worst difference, all jobs, ``trainer`` if any seed fell back)."""
    merged: dict[tuple[float, int, int], dict[str, Any]] = {}
    for t in trainers:
        if not isinstance(t, DenseBatchTrainer):
            continue
        for key, g in t.gate.items():
            row = merged.setdefault(key, {**g.to_dict(), "rel_diff": 0.0, "jobs": 0})
            row["rel_diff"] = max(row["rel_diff"], g.rel_diff)
            row["jobs"] += g.jobs
            if g.path == "trainer":
                row["path"] = "trainer"
    return [merged[k] for k in sorted(merged)]
