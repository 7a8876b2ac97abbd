"""What secure aggregation costs: ``python -m server.secagg.bench [--json]``.

Four figures, each against a baseline measured in the same run:

- **Device**: clip, encode in fixed point, mask (ChaCha20) and seal the seed (X25519 +
  HKDF + ChaCha20-Poly1305) for 100k and 1M parameters, as the SDK does it
  (:func:`client_sdk.secagg.mask_update`), in ms and as a ratio to one training step of
  the zoo MLP (batch 32, digits, the ``train_step`` graph in ONNX Runtime).
- **Server fold**: folds per second of masked updates (uint32, weighted modulo 2**32)
  against plain float32 updates in the same aggregator code, staleness 0..3 in turn,
  alternating blocks, the best block of each kept. Target: ratio >= 0.8. (A masked
  buffer keeps one sum per integer weight, so a fold is one add; the sums are combined
  when a buffer is sealed, once per version, as a plain step costs its own passes.)
- **Release**: a real mask service (``asyncfl secagg serve`` as a child process, its own
  SQLite store), K sealed seeds registered, then one release of K = 10 and K = 100 at
  each size timed end to end over HTTP (claim, expand K masks, weighted sum, transfer).
- **Bytes**: an upload body (msgpack, as the SDK sends it) masked against plain.

The last line printed is JSON: ``{"device": [...], "fold": [...], "release": [...],
"bytes": [...], "mlp_step_ms"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client_sdk.api import ServerApi
from client_sdk.bundle import Bundle
from client_sdk.secagg import FixedPoint, mask_update, seal_seed, seed_context
from client_sdk.trainer import Trainer
from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import AggregationConfig
from server.aggregation.masked import Release, release_id
from server.modeling.datasets import load_dataset
from server.secagg.config import SecureAggregation
from server.secagg.provider import MaskServiceProvider
from server.tasks.artifacts import export_zoo_bundle

SIZES = (100_000, 1_000_000)
THRESHOLDS = (10, 100)
NEVER = 1 << 40  # a buffer goal no bench reaches
STALENESS = 3
CLIP = 5.0


def _best_of(block: Callable[[], float], rounds: int) -> float:
    return max(block() for _ in range(rounds))


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def mlp_step_ms(exports_dir: Path, reps: int) -> float:
    """Median ms of one ``train_step`` of the zoo MLP on a batch of 32 digits."""
    bundle: Bundle = asyncio.run(export_zoo_bundle("mlp", "sgd", exports_dir))
    trainer = Trainer(bundle)
    x, y, _, _ = load_dataset("digits")
    xb, yb = x[:32], y[:32]
    params, state = [np.array(p) for p in bundle.initial_params], trainer.initial_state()
    trainer.train_step(params, state, xb, yb, 0.1)  # warm up the session
    return _median_ms(lambda: trainer.train_step(params, state, xb, yb, 0.1), reps)


def device_ms(size: int, fp: FixedPoint, mask_key: bytes, reps: int) -> float:
    rng = np.random.default_rng(size)
    delta = [rng.standard_normal(size).astype(np.float32)]
    context = seed_context("bench", "session", "update")
    return _median_ms(lambda: mask_update(delta, fp, mask_key, context), reps)


def fold_rates(size: int, rounds: int) -> tuple[float, float]:
    """Best folds/s of plain float32 and of masked uint32 updates of ``size`` parameters."""
    config = AggregationConfig.from_dict({"aggregation_goal": NEVER, "clip_norm": CLIP})
    masked_cfg = SecureAggregation(threshold=10).masked(
        AggregationConfig.from_dict({"aggregation_goal": 10, "clip_norm": CLIP})
    )
    rng = np.random.default_rng(size)
    plain_update = (rng.standard_normal(size) * 1e-3).astype(np.float32)
    masked_update = rng.integers(0, 2**32, size, dtype=np.uint32)
    for arr in (plain_update, masked_update):
        arr.flags.writeable = False  # like a wire buffer
    params = [np.zeros(size, np.float32)]
    plain = FedBuffAggregator(params, config, version=STALENESS)
    masked = FedBuffAggregator(params, config, version=STALENESS, masked=masked_cfg)
    per_block = max(10, 500_000 // size * 10)
    counter = iter(range(1 << 62))

    def folding(agg: FedBuffAggregator, update: np.ndarray[Any, Any]) -> Callable[[], float]:
        def block() -> float:
            ids = [f"u{next(counter)}" for _ in range(per_block)]
            start = time.perf_counter()
            for i, update_id in enumerate(ids):  # staleness 0..3: four distinct weights
                agg.fold(update_id, [update], 32, agg.version - i % (STALENESS + 1))
            return per_block / (time.perf_counter() - start)

        return block

    plain_block, masked_block = folding(plain, plain_update), folding(masked, masked_update)
    best_plain = best_masked = 0.0
    for _ in range(rounds):  # alternate, so both see the same machine
        best_plain = max(best_plain, plain_block())
        best_masked = max(best_masked, masked_block())
    return best_plain, best_masked


async def release_ms(size: int, thresholds: tuple[int, ...], reps: int) -> list[dict[str, Any]]:
    """Time releases of K registered seeds through a real mask service process."""
    out = []
    with tempfile.TemporaryDirectory(prefix="asyncfl-secagg-bench-") as tmp:
        provider = MaskServiceProvider(url="", token="", child_dir=Path(tmp) / "secagg")
        try:
            client = await provider.client()
            key = (await client.key()).public_key
            version = 0
            for k in thresholds:
                times = []
                for rep in range(reps):
                    task = f"bench-{size}-{k}-{rep}"
                    ids = [f"u{i}" for i in range(k)]
                    for i, uid in enumerate(ids):
                        sealed = seal_seed(key, os.urandom(32), seed_context(task, uid, uid))
                        await client.register(
                            task,
                            update_id=uid,
                            session_id=uid,
                            device_id=f"d{i}",
                            threshold=k,
                            sealed=sealed,
                        )
                    version += 1
                    weights = [64 - (i % 7) for i in range(k)]
                    start = time.perf_counter()
                    release = Release(
                        version,
                        tuple(ids),
                        tuple(weights),
                        np.zeros(size, np.uint32),
                        0.0,
                        release_id(task, ids, weights),
                    )
                    mask_sum = await client.release(task, release, size)
                    times.append(time.perf_counter() - start)
                    assert mask_sum.shape == (size,)
                out.append({"params": size, "k": k, "release_ms": statistics.median(times) * 1000})
        finally:
            await provider.close()
    return out


def upload_bytes(size: int, fp: FixedPoint, mask_key: bytes) -> dict[str, Any]:
    api = ServerApi(transport=None)  # type: ignore[arg-type]  # encodes only; never sends
    delta = [np.random.default_rng(size).standard_normal(size).astype(np.float32)]
    plain = api.encode_update("s", 1, 32, delta, {"loss": 0.5})
    masked, sealed = mask_update(delta, fp, mask_key, seed_context("t", "s", "s"))
    secure = api.encode_masked_update("s", 1, 32, masked, sealed, {"loss": 0.5})
    return {
        "params": size,
        "plain_bytes": len(plain),
        "masked_bytes": len(secure),
        "ratio": round(len(secure) / len(plain), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.secagg.bench", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--thresholds", type=int, nargs="+", default=list(THRESHOLDS))
    parser.add_argument("--rounds", type=int, default=5, help="fold blocks per contender")
    parser.add_argument("--reps", type=int, default=5, help="timed repeats per device figure")
    parser.add_argument("--release-reps", type=int, default=2)
    parser.add_argument("--exports-dir", type=Path, default=Path(".asyncfl/exports"))
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    config = AggregationConfig.from_dict({"aggregation_goal": 10, "clip_norm": CLIP})
    fp = SecureAggregation(threshold=10).fixed_point(config)
    mask_key = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    say("timing one MLP training step ...")
    step_ms = mlp_step_ms(args.exports_dir, max(20, args.reps))
    result: dict[str, Any] = {"mlp_step_ms": round(step_ms, 3)}
    result["device"] = []
    for size in args.sizes:
        ms = device_ms(size, fp, mask_key, args.reps)
        result["device"].append(
            {"params": size, "mask_ms": round(ms, 2), "mlp_steps": round(ms / step_ms, 2)}
        )
        say(f"device {size:>9,}: {ms:.1f} ms ({ms / step_ms:.1f} MLP steps)")
    result["fold"] = []
    for size in args.sizes:
        plain, masked = fold_rates(size, args.rounds)
        result["fold"].append(
            {
                "params": size,
                "plain_folds_per_s": round(plain, 1),
                "masked_folds_per_s": round(masked, 1),
                "ratio": round(masked / plain, 3),
            }
        )
        say(f"fold   {size:>9,}: plain {plain:.0f}/s, masked {masked:.0f}/s")
    result["release"] = []
    for size in args.sizes:
        rows = asyncio.run(release_ms(size, tuple(args.thresholds), args.release_reps))
        for row in rows:
            row["release_ms"] = round(row["release_ms"], 1)
            say(f"release {size:>9,} K={row['k']}: {row['release_ms']} ms")
        result["release"].extend(rows)
    result["bytes"] = [upload_bytes(size, fp, mask_key) for size in args.sizes]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
