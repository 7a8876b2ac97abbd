"""What differential privacy costs the server: ``python -m server.privacy.bench [--json]``.

Per version (K updates folded, one server step), the server CPU with DP off (clipping
only, ``clip_norm`` set) against DP on (the same, plus the calibrated Gaussian noise and
the accounting the server does after every version: epsilon at the new version count and
the budget check), on the same aggregator code, alternating blocks, process CPU time, the
best block of each kept. The budget is the README's example (epsilon 8 at delta 1e-5,
``"auto"`` noise over 100 planned versions, K = 10, staleness <= 4, a device at most
once every 5 versions). The accountant caches epsilon per contribution count, as the
server's does; ``accounting_uncached_ms`` is one epsilon computed afresh.

The last line printed is JSON: ``{"params", "k", "off_ms_per_version",
"on_ms_per_version", "ratio", "accounting_uncached_ms", "noise_multiplier"}`` per size.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import AggregationConfig
from server.privacy.accountant import Accountant
from server.privacy.budget import PrivacyBudget
from server.privacy.config import PrivacyConfig

SIZES = (100_000, 1_000_000)
K = 10
AGGREGATION = {"aggregation_goal": K, "clip_norm": 1.0, "max_staleness": 4}
PRIVACY = {
    "target_epsilon": 8.0,
    "delta": 1e-5,
    "noise_multiplier": "auto",
    "planned_versions": 100,
    "min_separation": 5,
}


def _block(
    agg: FedBuffAggregator,
    update: np.ndarray[Any, Any],
    versions: int,
    budget: PrivacyBudget | None,
    counter: Any,
) -> float:
    """Process CPU seconds per version over ``versions`` versions."""
    start = time.process_time()
    for _ in range(versions):
        for _ in range(K):
            agg.fold(f"u{next(counter)}", [update], 32, agg.version)
        if budget is not None:  # what the server does after each version
            budget.epsilon(agg.version)
            budget.reached(agg.version)
    return (time.process_time() - start) / versions


def measure(size: int, rounds: int, budget: PrivacyBudget) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    update = (rng.standard_normal(size) * 0.05).astype(np.float32)  # norm > C: clipped
    update.flags.writeable = False
    off_cfg = AggregationConfig.from_dict(AGGREGATION)
    on_cfg = AggregationConfig.from_dict(
        {**AGGREGATION, "noise_multiplier": budget.noise_multiplier}
    )
    off = FedBuffAggregator([np.zeros(size, np.float32)], off_cfg, version=0)
    on = FedBuffAggregator([np.zeros(size, np.float32)], on_cfg, version=0)
    versions = max(2, 2_000_000 // (size * K))
    counter = iter(range(1 << 62))
    best_off = best_on = float("inf")
    for _ in range(rounds):
        best_off = min(best_off, _block(off, update, versions, None, counter))
        best_on = min(best_on, _block(on, update, versions, budget, counter))
    fresh = Accountant(
        budget.noise_multiplier,
        budget.config.delta,
        min_separation=budget.config.min_separation,
        max_staleness=budget.max_staleness,
    )
    start = time.process_time()
    fresh.epsilon(100)
    uncached = time.process_time() - start
    return {
        "params": size,
        "k": K,
        "off_ms_per_version": round(best_off * 1000, 3),
        "on_ms_per_version": round(best_on * 1000, 3),
        "ratio": round(best_on / best_off, 3),
        "accounting_uncached_ms": round(uncached * 1000, 3),
        "noise_multiplier": budget.noise_multiplier,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.privacy.bench", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    budget = PrivacyBudget.resolve(
        PrivacyConfig.from_dict(PRIVACY), AggregationConfig.from_dict(AGGREGATION)
    )
    rows = []
    for size in args.sizes:
        row = measure(size, args.rounds, budget)
        rows.append(row)
        if not args.json:
            print(
                f"{size:>9,} params: DP off {row['off_ms_per_version']} ms/version, "
                f"on {row['on_ms_per_version']} ms/version (x{row['ratio']})",
                flush=True,
            )
    print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
