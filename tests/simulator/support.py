"""Helpers for the simulator tests: a small preset and a fast numpy stand-in trainer.

The stand-in trains softmax regression with the SDK trainer's loop semantics (reshuffle
per epoch with ``default_rng(seed)``, stop before step ``steps``), so engine tests run
in milliseconds; tests/simulator/test_training.py covers the real ONNX path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from simulator.config import Preset
from simulator.environment import Environment, build_environment
from simulator.parsing import parse_preset
from simulator.presets import apply_override
from simulator.training import LocalUpdate, TrainJob

Array = np.ndarray[Any, Any]

TINY: dict[str, Any] = {
    "kind": "compare",
    "seed": 3,
    "data": {
        "dataset": "digits",
        "alpha": 0.5,
        "size_median": 12,
        "min_size": 4,
        "max_size": 40,
        "eval_devices": 20,
        "eval_examples": 10,
    },
    "training": {
        "client_lr": 0.5,
        "batch_size": 8,
        "epochs": 1,
        "time_budget_s": 60,
        "session_timeout_s": 90,
    },
    "fleet": {
        "devices": 300,
        "rtt_s": 0.1,
        "tiers": [
            {
                "name": "fast",
                "share": 0.6,
                "speed": {"kind": "lognormal", "median_s": 0.5, "sigma": 0.5},
                "dropout": 0.05,
            },
            {
                "name": "slow",
                "share": 0.4,
                "speed": {"kind": "lognormal", "median_s": 2.0, "sigma": 0.8},
                "dropout": 0.1,
            },
        ],
    },
    "async": {
        "concurrency": 30,
        "aggregation_goal": 5,
        "max_staleness": 50,
        "optimizer": {"name": "fedavgm", "lr": 0.5, "momentum": 0.5},
    },
    "sync": {
        "concurrency": 30,
        "over_selection": 0.3,
        "round_timeout_s": 90,
        "optimizer": {"name": "fedavgm", "lr": 1.0, "momentum": 0.5},
    },
    "run": {"target": 0.6, "eval_every_s": 10, "max_virtual_s": 3000},
}


def tiny_preset(*overrides: str, base: dict[str, Any] | None = None) -> Preset:
    data = copy.deepcopy(base if base is not None else TINY)
    for item in overrides:
        apply_override(data, item)
    return parse_preset(data, "tiny")


def tiny_env(*overrides: str, batched: bool = False) -> Environment:
    preset = tiny_preset(*overrides)
    trainer = BatchedSoftmax() if batched else Softmax()
    return build_environment(preset, trainer)


class Softmax:
    """Softmax regression on 64 features, 10 classes; one device at a time."""

    batched = False

    def __init__(self, features: int = 64, classes: int = 10) -> None:
        rng = np.random.default_rng(0)
        self._init = [
            (rng.standard_normal((classes, features)) * 0.01).astype(np.float32),
            np.zeros(classes, dtype=np.float32),
        ]

    @property
    def params_bytes(self) -> int:
        return sum(int(p.nbytes) for p in self._init)

    @property
    def graph_bytes(self) -> int:
        return 10_000

    def initial_params(self) -> list[Array]:
        return [p.copy() for p in self._init]

    def check_data(self, x: Array, y: Array) -> None:
        assert x.dtype == np.float32 and y.dtype == np.int64

    def accuracy(self, params: Sequence[Array], x: Array, y: Array) -> float:
        w, b = params
        return float(np.mean(np.argmax(x @ w.T + b, axis=1) == y))

    def train_many(
        self, jobs: Sequence[TrainJob], *, lr: float, batch_size: int, epochs: int
    ) -> list[LocalUpdate]:
        return [self._one(j, lr, batch_size, epochs) for j in jobs]

    def _one(self, job: TrainJob, lr: float, batch_size: int, epochs: int) -> LocalUpdate:
        w, b = (np.array(p, dtype=np.float32) for p in job.params)
        rng = np.random.default_rng(job.seed)
        n, steps, seen = len(job.x), 0, 0
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                if steps >= job.steps:
                    break
                idx = order[start : start + batch_size]
                x, y = job.x[idx], job.y[idx]
                logits = x @ w.T + b
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                p[np.arange(len(y)), y] -= 1
                p /= len(y)
                w -= np.float32(lr) * (p.T @ x).astype(np.float32)
                b -= np.float32(lr) * p.sum(0).astype(np.float32)
                steps += 1
                seen += len(idx)
        delta = [w - np.asarray(job.params[0]), b - np.asarray(job.params[1])]
        return LocalUpdate(delta, min(seen, n), steps)


class BatchedSoftmax(Softmax):
    """The same trainer, flagged as batched: the engine then trains sessions ahead."""

    batched = True
