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

_SHAPES = 8  # the most FLOP-heavy shapes timed (they carry nearly all the FLOPs)
_BUDGET_S = 0.05  # wall time spent timing each shape


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
    counts: dict[tuple[int, int, int, int], int] = {}
    for t in batched:
        for shape, c in t.shapes.items():
            counts[shape] = counts.get(shape, 0) + c
    flops = sum(t.flops for t in batched)
    seconds = sum(t.seconds for t in batched)

    def weight(item: tuple[tuple[int, int, int, int], int]) -> float:
        (g, m, k, n), c = item
        return float(c) * g * m * k * n

    top = sorted(counts.items(), key=weight, reverse=True)[:_SHAPES]
    timed_flops = sum(2.0 * weight(item) for item in top)
    timed_s = sum(c * matmul_seconds(*shape) for shape, c in top)
    matmul_rate = timed_flops / timed_s if timed_s > 0 else None
    rate = flops / seconds
    return {
        "gflops": rate / 1e9,
        "matmul_gflops": None if matmul_rate is None else matmul_rate / 1e9,
        "matmul_fraction": None if matmul_rate is None else rate / matmul_rate,
        "train_s": seconds,
        "shapes_timed": len(top),
        "flops_covered": timed_flops / flops if flops else 0.0,
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
