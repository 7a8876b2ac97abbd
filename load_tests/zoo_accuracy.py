"""Held-out accuracy of a zoo model trained centrally with the Python Trainer:

    python load_tests/zoo_accuracy.py [--model cnn] [--seeds 0 1 2] [--epochs 1 3 10]

For each seed: export the model (initial weights from that seed, the 50-step parity
gate), train with SGD at the zoo's learning rate, batch 32, reshuffled every epoch, and
evaluate on the dataset's test split after the listed epochs. One JSON line per seed
(with the gate's parameter difference to torch eager).
A model outside the zoo is ``module:factory`` (see ``server.modeling.zoo``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client_sdk.trainer import Trainer, TrainPlan  # noqa: E402
from server.modeling.datasets import load_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=1e-5, help="of the export's parity gate")
    args = p.parse_args(argv)

    from server.modeling.export import export_bundle
    from server.modeling.zoo import resolve

    entry = resolve(args.model)
    assert entry.dataset is not None, "the model needs a dataset with a test split"
    x, y, x_test, y_test = load_dataset(entry.dataset)
    plan = TrainPlan(lr=entry.lr, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="zoo-accuracy-") as tmp:
        for seed in args.seeds:
            folder = Path(tmp) / str(seed)
            bundle = export_bundle(args.model, folder, seed=seed, tolerance=args.tolerance)
            trainer = Trainer(bundle, threads=1)
            params = list(bundle.initial_params)
            accuracy: dict[int, float] = {}
            started = time.perf_counter()
            for epoch in range(1, max(args.epochs) + 1):
                result = trainer.train(params, x, y, plan, seed=seed * 1000 + epoch)
                params = [p + d for p, d in zip(params, result.delta, strict=True)]
                if epoch in args.epochs:
                    got = trainer.evaluate(params, x_test, y_test).accuracy
                    assert got is not None
                    accuracy[epoch] = round(got, 4)
            line = {
                "bench": "zoo_accuracy",
                "model": bundle.manifest.model,
                "seed": seed,
                "params": bundle.manifest.num_params,
                "parity_max_param_diff": bundle.manifest.extra["parity"]["max_param_diff"],
                "lr": entry.lr,
                "accuracy_by_epoch": accuracy,
                "train_s": round(time.perf_counter() - started, 2),
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
