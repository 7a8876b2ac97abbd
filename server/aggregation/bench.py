"""Fold throughput against a bare ``np.add``: ``python -m server.aggregation.bench [--json]``.

For 100k and 1M float32 parameters, times real :meth:`FedBuffAggregator.fold` calls
(one-tensor updates, staleness 3 so the weight is not 1) and ``np.add(acc, upd,
out=acc)`` on the same update array, in alternating blocks. The best block of each is
kept (the least disturbed by other processes on a shared machine) and ratios are taken
within the run. Contenders:

- ``folds_per_s``: a fold as the server runs it at ingest: validation (one ``sdot``
  pass: norm and NaN/Inf check), the weighted add in one fused ``saxpy`` pass, the
  weighting and bookkeeping. The buffer never fills, so no server-optimizer step is
  timed: a step is a separate operation every K folds (see the next line).
- ``folds_with_steps_per_s``: the same with K = 10, the optimizer step (FedAvg: a norm
  pass and a ``saxpy`` over the parameters, plus bookkeeping) amortized over 10 folds.
- ``kernel_ratio``: the two BLAS passes of a fold alone (the ceiling of any validated
  fold), against ``np.add``.
- ``merged_updates_per_s``: what the leader of a distributed task does per update when
  replicas pre-aggregate: :meth:`FedBuffAggregator.merge` of partials of 10 updates
  each (one ``saxpy`` of the group sum), counted per update.

The last line printed is JSON: ``{"params", "folds_per_s", "np_add_per_s", "ratio",
"folds_with_steps_per_s", "ratio_with_steps", "kernel_ratio", "merged_updates_per_s",
"merge_ratio"}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from server.aggregation import blas
from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import AggregationConfig
from server.aggregation.partial import Partial, PartialGroup

__all__ = ["Rates", "main", "measure"]

SIZES = (100_000, 1_000_000)
GOAL = 10
NEVER = 1 << 40  # a buffer goal no bench reaches
STALENESS = 3
PARTIAL = 10  # updates per merged partial


@dataclass(frozen=True)
class Rates:
    """Best operations per second of each contender for one model size."""

    folds: float  # FedBuffAggregator.fold (validating), no step
    adds: float  # np.add(acc, upd, out=acc)
    kernels: float  # sdot + saxpy alone: the ceiling of a validated weighted fold
    with_steps: float  # folds and a FedAvg step every K = 10
    merged: float  # updates per second merged as partials of PARTIAL updates each


def measure(size: int, *, rounds: int) -> Rates:
    """Interleave ``rounds`` blocks of each contender on ``size`` float32 parameters."""
    rng = np.random.default_rng(size)
    update = rng.standard_normal(size, dtype=np.float32) * np.float32(1e-3)
    update.flags.writeable = False  # like a wire buffer
    stepping = FedBuffAggregator(
        [np.zeros(size, np.float32)], AggregationConfig(aggregation_goal=GOAL), version=STALENESS
    )
    # a buffer that never fills: folds only
    agg = FedBuffAggregator(
        [np.zeros(size, np.float32)], AggregationConfig(aggregation_goal=NEVER), version=STALENESS
    )
    acc = np.zeros(size, np.float32)
    kernel_acc = np.zeros(size, np.float32)
    # Blocks are whole buffers (multiples of K) so steps are counted at their real rate.
    per_block = GOAL * max(1, 500_000 // size)  # short blocks: fewer preemptions inside
    counter = iter(range(1 << 62))

    def folding(target: FedBuffAggregator) -> Callable[[], float]:
        def block() -> float:
            ids = [f"u{next(counter)}" for _ in range(per_block)]
            start = time.perf_counter()
            for update_id in ids:
                target.fold(update_id, [update], 32, target.version - STALENESS)
            return per_block / (time.perf_counter() - start)

        return block

    fold_block = folding(agg)
    stepping_block = folding(stepping)
    merger = FedBuffAggregator(
        [np.zeros(size, np.float32)], AggregationConfig(aggregation_goal=NEVER), version=STALENESS
    )
    weights = (1.0,) * PARTIAL

    def merge_block() -> float:
        partials = [
            Partial(
                (
                    PartialGroup(
                        0,
                        0,
                        update,
                        float(PARTIAL),
                        tuple(f"m{next(counter)}" for _ in range(PARTIAL)),
                        weights,
                    ),
                )
            )
            for _ in range(per_block // PARTIAL)
        ]
        start = time.perf_counter()
        for partial in partials:
            merger.merge(partial)
        return len(partials) * PARTIAL / (time.perf_counter() - start)

    def add_block() -> float:
        start = time.perf_counter()
        for _ in range(per_block):
            np.add(acc, update, out=acc)
        return per_block / (time.perf_counter() - start)

    def kernel_block() -> float:
        start = time.perf_counter()
        for _ in range(per_block):
            blas.sq_norm(update)
            blas.add_scaled(kernel_acc, update, 0.05)
        return per_block / (time.perf_counter() - start)

    blocks = (fold_block, add_block, kernel_block, stepping_block, merge_block)
    for block in blocks:  # warm caches and the BLAS thread setting
        block()
    best = [0.0, 0.0, 0.0, 0.0, 0.0]
    for _ in range(rounds):
        for i, block in enumerate(blocks):
            best[i] = max(best[i], block())
    return Rates(*best)


def _table(sizes: Sequence[int], rates: Sequence[Rates]) -> str:
    lines = [
        f"{'params':>10} {'folds/s':>10} {'np.add/s':>10} {'ratio':>6}"
        f" {'+steps/s':>9} {'ratio':>6}"
        f" {'sdot+saxpy/s':>13} {'ceiling':>7} {'merged/s':>10} {'ratio':>6}"
    ]
    for n, r in zip(sizes, rates, strict=True):
        lines.append(
            f"{n:>10} {r.folds:>10.0f} {r.adds:>10.0f} {r.folds / r.adds:>6.3f}"
            f" {r.with_steps:>9.0f} {r.with_steps / r.adds:>6.3f}"
            f" {r.kernels:>13.0f} {r.kernels / r.adds:>7.3f}"
            f" {r.merged:>10.0f} {r.merged / r.adds:>6.3f}"
        )
    lines.append("folds: validated (norm + NaN/Inf) and weighted, no optimizer step; +steps: a")
    lines.append("FedAvg step every K = 10 folds included; ceiling: the two BLAS passes alone;")
    lines.append(f"merged: updates per second a leader merges as partials of {PARTIAL}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--rounds", type=int, default=40, help="alternating blocks per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes: list[int] = args.sizes
    rates = [measure(size, rounds=args.rounds) for size in sizes]
    folds = [r.folds for r in rates]
    adds = [r.adds for r in rates]
    if not args.json:
        print(_table(sizes, rates))
    print(
        json.dumps(
            {
                "params": sizes,
                "folds_per_s": [round(f, 1) for f in folds],
                "np_add_per_s": [round(a, 1) for a in adds],
                "ratio": [round(f / a, 3) for f, a in zip(folds, adds, strict=True)],
                "folds_with_steps_per_s": [round(r.with_steps, 1) for r in rates],
                "ratio_with_steps": [round(r.with_steps / r.adds, 3) for r in rates],
                "kernel_ratio": [round(r.kernels / r.adds, 3) for r in rates],
                "merged_updates_per_s": [round(r.merged, 1) for r in rates],
                "merge_ratio": [round(r.merged / r.adds, 3) for r in rates],
            }
        )
    )


if __name__ == "__main__":
    main()
