"""Zoo entries the simulator adds for LEAF Synthetic data (60 features, 10 classes).

Referenced as ``simulator.models:synthetic_logreg`` by the exporter; importing this
module needs torch, so only the export path does.
"""

from __future__ import annotations

import numpy as np

from server.modeling.zoo import MLP, LogisticRegression, ZooEntry

__all__ = ["synthetic_logreg", "synthetic_mlp"]

FEATURES, CLASSES = 60, 10


def _example() -> tuple[
    np.ndarray[tuple[int, int], np.dtype[np.float32]], np.ndarray[tuple[int], np.dtype[np.int64]]
]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, 8)


def synthetic_logreg() -> ZooEntry:
    """Multinomial logistic regression, FedProx's model for Synthetic(alpha, beta)."""
    return ZooEntry(
        "synthetic-logreg",
        lambda: LogisticRegression(FEATURES, CLASSES),
        "classification",
        _example(),
        None,
        lr=0.05,
    )


def synthetic_mlp() -> ZooEntry:
    """A 60-64-10 MLP for Synthetic(alpha, beta)."""
    return ZooEntry(
        "synthetic-mlp",
        lambda: MLP(FEATURES, 64, CLASSES),
        "classification",
        _example(),
        None,
        lr=0.05,
    )
