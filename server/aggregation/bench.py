"""Fold throughput against a bare ``np.add``: ``python -m server.aggregation.bench [--json]``.

For 100k and 1M float32 parameters, times real :meth:`FedBuffAggregator.fold` calls
(one-tensor updates, staleness 3 so the weight is not 1) and ``np.add(acc, upd,
out=acc)`` on the same update array, in alternating blocks. The best block of each is
kept (the least disturbed by other processes on a shared machine) and ratios are taken
within the run. Contenders:

- ``folds_per_s``: a fold as the server's aggregator runs it, the update validated at
  ingest (:func:`validate_update`, before the upload is acknowledged) and the fold
  given that norm: the weighted add in one fused ``saxpy`` pass plus the weighting and
  bookkeeping. The buffer never fills, so no server-optimizer step is timed: a step
  is a separate operation every K folds (see the next line).
- ``folds_with_steps_per_s``: the same with K = 10, the optimizer step (FedAvg: a norm
  pass and a ``saxpy`` over the parameters, plus bookkeeping) amortized over 10 folds.
- ``validated_folds_per_s``: a fold that validates as well (``sdot`` + ``saxpy``), as a
  caller without an ingest check runs it; the table also shows those two BLAS passes
  alone (the ceiling of any validated fold).

The last line printed is JSON: ``{"params", "folds_per_s", "np_add_per_s", "ratio",
"folds_with_steps_per_s", "ratio_with_steps", "validated_folds_per_s",
"validated_ratio"}``.
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
from server.aggregation.validation import validate_update

__all__ = ["Rates", "main", "measure"]

SIZES = (100_000, 1_000_000)
GOAL = 10
NEVER = 1 << 40  # a buffer goal no bench reaches
STALENESS = 3


@dataclass(frozen=True)
class Rates:
    """Best operations per second of each contender for one model size."""

    folds: float  # FedBuffAggregator.fold with the ingest norm, no step
    adds: float  # np.add(acc, upd, out=acc)
    kernels: float  # sdot + saxpy alone: the ceiling of a validated weighted fold
    validated: float  # FedBuffAggregator.fold validating itself, no step
    with_steps: float  # folds with the ingest norm and a FedAvg step every K = 10


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

    ingest_norm = validate_update(agg.spec, [update])

    def folding(target: FedBuffAggregator, norm: float | None) -> Callable[[], float]:
        """A timed block of ``target.fold`` calls; ``norm=None`` makes the fold validate."""

        def block() -> float:
            ids = [f"u{next(counter)}" for _ in range(per_block)]
            start = time.perf_counter()
            for update_id in ids:
                target.fold(update_id, [update], 32, target.version - STALENESS, norm=norm)
            return per_block / (time.perf_counter() - start)

        return block

    fold_block = folding(agg, ingest_norm)
    stepping_block = folding(stepping, ingest_norm)
    validated_block = folding(agg, None)

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

    blocks = (fold_block, add_block, kernel_block, validated_block, stepping_block)
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
        f" {'validated/s':>12} {'ratio':>6} {'sdot+saxpy/s':>13} {'ceiling':>7}"
    ]
    for n, r in zip(sizes, rates, strict=True):
        lines.append(
            f"{n:>10} {r.folds:>10.0f} {r.adds:>10.0f} {r.folds / r.adds:>6.3f}"
            f" {r.with_steps:>9.0f} {r.with_steps / r.adds:>6.3f}"
            f" {r.validated:>12.0f} {r.validated / r.adds:>6.3f}"
            f" {r.kernels:>13.0f} {r.kernels / r.adds:>7.3f}"
        )
    lines.append("folds: norm from the ingest check, no optimizer step; +steps: a FedAvg")
    lines.append("step every K = 10 folds included; validated: the fold computes the norm too")
    lines.append("ceiling: the two BLAS passes of a validated fold alone, without Python or steps")
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
                "validated_folds_per_s": [round(r.validated, 1) for r in rates],
                "validated_ratio": [round(r.validated / r.adds, 3) for r in rates],
            }
        )
    )


if __name__ == "__main__":
    main()
