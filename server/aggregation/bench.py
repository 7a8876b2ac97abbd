"""Fold throughput against a bare ``np.add``: ``python -m server.aggregation.bench [--json]``.

For 100k and 1M float32 parameters, times real :meth:`FedBuffAggregator.fold` calls
(one-tensor updates, staleness 3 so the weight is not 1, a step every K = 10 folds)
and ``np.add(acc, upd, out=acc)`` on the same update array, in alternating blocks.
The best block of each is kept (the least disturbed by other processes on a shared
machine) and the ratio is taken within the run. The last line printed is JSON:
``{"params": [...], "folds_per_s": [...], "np_add_per_s": [...], "ratio": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import AggregationConfig

__all__ = ["main", "measure"]

SIZES = (100_000, 1_000_000)
GOAL = 10
STALENESS = 3


def measure(size: int, *, rounds: int) -> tuple[float, float]:
    """``(folds_per_s, np_add_per_s)`` for a model of ``size`` float32 parameters."""
    rng = np.random.default_rng(size)
    update = rng.standard_normal(size, dtype=np.float32) * np.float32(1e-3)
    update.flags.writeable = False  # like a wire buffer
    config = AggregationConfig(aggregation_goal=GOAL)
    agg = FedBuffAggregator([np.zeros(size, np.float32)], config, version=STALENESS)
    acc = np.zeros(size, np.float32)
    tensors = [update]
    # Blocks are whole buffers (multiples of K) so steps are counted at their real rate.
    per_block = GOAL * max(1, 500_000 // size)  # short blocks: fewer preemptions inside
    counter = iter(range(1 << 62))

    def fold_block() -> float:
        ids = [f"u{next(counter)}" for _ in range(per_block)]
        start = time.perf_counter()
        for update_id in ids:
            agg.fold(update_id, tensors, 32, agg.version - STALENESS)
        return per_block / (time.perf_counter() - start)

    def add_block() -> float:
        start = time.perf_counter()
        for _ in range(per_block):
            np.add(acc, update, out=acc)
        return per_block / (time.perf_counter() - start)

    fold_block(), add_block()  # warm caches and the BLAS thread setting
    folds: list[float] = []
    adds: list[float] = []
    for _ in range(rounds):
        folds.append(fold_block())
        adds.append(add_block())
    return max(folds), max(adds)


def _table(sizes: Sequence[int], folds: Sequence[float], adds: Sequence[float]) -> str:
    lines = [f"{'params':>10} {'folds/s':>12} {'np.add/s':>12} {'ratio':>7}"]
    for n, f, a in zip(sizes, folds, adds, strict=True):
        lines.append(f"{n:>10} {f:>12.0f} {a:>12.0f} {f / a:>7.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--rounds", type=int, default=40, help="alternating blocks per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes: list[int] = args.sizes
    folds, adds = [], []
    for size in sizes:
        f, a = measure(size, rounds=args.rounds)
        folds.append(f)
        adds.append(a)
    if not args.json:
        print(_table(sizes, folds, adds))
    print(
        json.dumps(
            {
                "params": sizes,
                "folds_per_s": [round(f, 1) for f in folds],
                "np_add_per_s": [round(a, 1) for a in adds],
                "ratio": [round(f / a, 3) for f, a in zip(folds, adds, strict=True)],
            }
        )
    )


if __name__ == "__main__":
    main()
