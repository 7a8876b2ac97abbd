"""A per-session cache of exported bundles, shared by tests/modeling and tests/sdk_trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from client_sdk.bundle import MANIFEST_FILE
from server.modeling.zoo import ZooEntry

PARITY_STEPS = 10  # short gate runs keep the suite fast; `asyncfl model check` runs 50


class BundleCache:
    """Exports each (model, optimizer) once per test session into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, model: str, optimizer: str = "sgd") -> Path:
        from server.modeling.export import export_bundle

        out = self.root / f"{model.replace(':', '_').replace('.', '_')}-{optimizer}"
        if not (out / MANIFEST_FILE).exists():
            export_bundle(model, out, optimizer=optimizer, parity_steps=PARITY_STEPS)
        return out


class TinyRegression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)  # type: ignore[no-any-return]


def linear_regression() -> ZooEntry:
    """A model outside the zoo, referenced as ``tests.modeling.support:linear_regression``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5), dtype=np.float32)
    return ZooEntry("tiny-regression", TinyRegression, "regression", (x, x.sum(1)), None)


class PooledCNN(nn.Module):
    """conv3x3(4)-ReLU-maxpool2-fc over 1x8x8 images: the zoo CNN has no pool any more."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))  # type: ignore[no-any-return]


def pooled_cnn() -> ZooEntry:
    """A max-pooling model, referenced as ``tests.modeling.support:pooled_cnn``."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 8, 8), dtype=np.float32)
    return ZooEntry("pooled-cnn", PooledCNN, "classification", (x, rng.integers(0, 10, 8)), None)
