"""``asyncfl model check``: export with the parity gate, then time ORT against torch eager.

Each engine trains in its own subprocess (``python -m server.modeling.bench ENGINE``) so
that its peak RSS is its own: the ORT child imports only numpy, onnxruntime and
``client_sdk`` (it reports whether torch got loaded), the torch child runs the usual
eager loop (forward, loss, backward, ``torch.optim`` step). Both use one thread, the
same initial weights and the same batches, and report the best of ``repeats`` timed
passes after a warm-up. This module imports neither torch nor onnx at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.bundle import Bundle
from server.modeling.errors import ModelingError

_WARMUP_STEPS = 10
_DISTINCT_BATCHES = 25  # cycled; keeps the data small next to the engines' own memory
_CHILD_TIMEOUT_S = 600


def run_check(
    model: str,
    *,
    optimizer: str = "sgd",
    steps: int = 200,
    batch_size: int = 32,
    repeats: int = 3,
    parity_steps: int = 50,
    tolerance: float = 1e-5,
) -> dict[str, Any]:
    """Export ``model`` (parity gate included) and benchmark both engines."""
    from server.modeling.export import export_bundle
    from server.modeling.parity import parity_batches
    from server.modeling.zoo import resolve

    entry = resolve(model)
    with tempfile.TemporaryDirectory(prefix="asyncfl-check-") as tmp:
        bundle_dir, data_dir = Path(tmp) / "bundle", Path(tmp) / "data"
        bundle = export_bundle(
            model, bundle_dir, optimizer=optimizer, parity_steps=parity_steps, tolerance=tolerance
        )
        batches = parity_batches(entry, min(steps, _DISTINCT_BATCHES) + 1, batch_size, seed=1)
        data_dir.mkdir()
        np.save(data_dir / "x.npy", np.concatenate([b[0] for b in batches[:-1]]))
        np.save(data_dir / "y.npy", np.concatenate([b[1] for b in batches[:-1]]))
        common = ["--bundle", str(bundle_dir), "--data", str(data_dir), "--lr", str(entry.lr)]
        common += ["--steps", str(steps), "--batch-size", str(batch_size)]
        common += ["--repeats", str(repeats)]
        ort_run = _child(["ort", *common])
        torch_run = _child(["torch", *common, "--model", model])
    if ort_run["torch_loaded"]:
        raise ModelingError("the ONNX Runtime benchmark imported torch; its RSS is meaningless")
    parity = bundle.manifest.extra["parity"]
    return {
        "model": bundle.manifest.model,
        "params": bundle.manifest.num_params,
        "max_param_diff": parity["max_param_diff"],
        "max_loss_diff": parity["max_loss_diff"],
        "ort_ms_per_step": round(ort_run["ms_per_step"], 4),
        "torch_ms_per_step": round(torch_run["ms_per_step"], 4),
        "speedup_vs_torch": round(torch_run["ms_per_step"] / ort_run["ms_per_step"], 3),
        "ort_rss_mb": round(ort_run["peak_rss_mb"], 1),
        "torch_rss_mb": round(torch_run["peak_rss_mb"], 1),
    }


def _child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "server.modeling.bench", *args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=_CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelingError(f"the {args[0]} benchmark timed out after {exc.timeout} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ModelingError(f"the {args[0]} benchmark failed ({proc.returncode}): {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _batches(
    data: Path, steps: int, batch_size: int
) -> list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    x, y = np.load(data / "x.npy"), np.load(data / "y.npy")
    distinct = [
        (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
    ]
    return [distinct[i % len(distinct)] for i in range(steps)]


def _time_ort(args: argparse.Namespace) -> float:
    from client_sdk.trainer import Trainer, TrainPlan

    bundle = Bundle.load(args.bundle)
    trainer = Trainer(bundle, threads=1)
    batches = _batches(args.data, args.steps, args.batch_size)
    plan = TrainPlan(lr=args.lr, batch_size=args.batch_size)
    trainer.train_batches(bundle.initial_params, batches[:_WARMUP_STEPS], plan)
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        trainer.train_batches(bundle.initial_params, batches, plan)
        best = min(best, time.perf_counter() - started)
    return best


def _time_torch(args: argparse.Namespace) -> float:
    import torch

    from server.modeling.optimizers import make_optimizer
    from server.modeling.steps import train_loss
    from server.modeling.zoo import resolve

    torch.set_num_threads(1)
    bundle = Bundle.load(args.bundle)
    manifest = bundle.manifest
    batches = [
        (torch.from_numpy(x), torch.from_numpy(y))
        for x, y in _batches(args.data, args.steps, args.batch_size)
    ]
    model = resolve(args.model).factory()
    optimizer = make_optimizer(manifest.optimizer, manifest.optimizer_hparams)

    def one_pass(steps: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for p, value in zip(model.parameters(), bundle.initial_params, strict=True):
                p.copy_(torch.from_numpy(np.array(value)))
        opt = optimizer.reference(model.parameters(), args.lr)
        for x, y in steps:
            opt.zero_grad()
            loss = train_loss(manifest.task_type, model(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            loss.item()

    one_pass(batches[:_WARMUP_STEPS])
    best = float("inf")
    for _ in range(args.repeats):
        started = time.perf_counter()
        one_pass(batches)
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    ``VmHWM`` is per address space and restarts at exec; ``ru_maxrss`` would report the
    forking parent's peak to a freshly exec'd child, so it is only the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Entry point of a benchmark child; prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m server.modeling.bench")
    parser.add_argument("engine", choices=("ort", "torch"))
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    seconds = _time_ort(args) if args.engine == "ort" else _time_torch(args)
    report = {
        "engine": args.engine,
        "ms_per_step": seconds / args.steps * 1e3,
        "peak_rss_mb": peak_rss_mb(),
        "torch_loaded": "torch" in sys.modules,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
