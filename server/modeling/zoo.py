"""The model zoo: small torch models for the export, the simulator and the benchmarks.

=============  ==========================================================  ============
name           model                                                      dataset
=============  ==========================================================  ============
``logreg``     logistic regression, 64 features -> 10 classes             ``digits``
``mlp``        64-128-10 MLP with ReLU                                     ``digits``
``cnn``        conv5x5/2(16)-conv5x5/2(32)-fc(128)-fc(10), ELU, 1x28x28    ``digits28``
``embedding``  one nn.Embedding table per sparse id field, mean-pooled     ``ctr``
               bags, concatenated, 32-64-1 MLP; BCE with logits
=============  ==========================================================  ============

A model outside the zoo is named ``"module:factory"``: ``factory()`` must return a
:class:`ZooEntry` describing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from server.modeling.datasets import CTR_BAG, CTR_VOCAB
from server.modeling.errors import ExportError

Array = np.ndarray[Any, Any]

LOSSES: dict[str, str] = {
    "classification": "cross_entropy",
    "regression": "mse",
    "binary": "bce_with_logits",
}


@dataclass(frozen=True)
class ZooEntry:
    """A model the exporter can turn into a bundle.

    ``example_batch`` fixes the input and label dtypes and per-example shapes (its batch
    size does not matter); ``dataset`` names a :mod:`server.modeling.datasets` dataset
    (``None`` for models without one: parity then uses jittered example rows).
    """

    name: str
    factory: Callable[[], nn.Module]
    task_type: str
    example_batch: tuple[Array, Array]
    dataset: str | None = None
    lr: float = 0.05  # a client learning rate that trains this model well

    def __post_init__(self) -> None:
        if self.task_type not in LOSSES:
            raise ExportError(f"{self.name}: task_type must be one of {sorted(LOSSES)}")

    @property
    def loss(self) -> str:
        return LOSSES[self.task_type]


class LogisticRegression(nn.Module):
    def __init__(self, features: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)  # type: ignore[no-any-return]


class MLP(nn.Module):
    def __init__(self, features: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))  # type: ignore[no-any-return]


class CNN(nn.Module):
    """Two 5x5 convolutions of stride 2, each followed by ELU, then two fc.

    Built so that its gradient is continuous in the input and the parameters: two ONNX
    Runtime builds (WASM and native) whose conv kernels differ by an ulp then stay an ulp
    apart. A max-pool's backward hands each window's gradient to one maximum, and ReLU's
    passes it or not by the sign of its input; both choices flip on near-ties, and one
    flip moves a weight by ~lr x gradient. With max-pools and ReLU the 50-step runs
    ended 1e-4 to 1e-2 apart; the strides downsample instead of the pools, and ELU's
    slope is 1 on both sides of 0.
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, stride=2)  # 28x28 -> 12x12
        self.conv2 = nn.Conv2d(16, 32, 5, stride=2)  # 12x12 -> 4x4
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.conv1(x))
        x = F.elu(self.conv2(x))
        return self.fc2(F.elu(self.fc1(x.flatten(1))))  # type: ignore[no-any-return]


class EmbeddingCTR(nn.Module):
    """Click-through model over sparse id bags ``x: (N, fields, bag)``; id 0 is padding."""

    def __init__(self, vocab: tuple[int, ...] = CTR_VOCAB, dim: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, dim, padding_idx=0) for v in vocab)
        self.fc1 = nn.Linear(len(vocab) * dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for field, table in enumerate(self.tables):
            ids = x[:, field, :]
            count = (ids != 0).sum(1, keepdim=True).clamp(min=1).to(torch.float32)
            pooled.append(table(ids).sum(1) / count)  # padding rows are zero
        hidden = torch.relu(self.fc1(torch.cat(pooled, 1)))
        return self.fc2(hidden).squeeze(1)  # type: ignore[no-any-return]


def _example(x_shape: tuple[int, ...], classes: int | None) -> tuple[Array, Array]:
    rng = np.random.default_rng(0)
    x = rng.random((8, *x_shape), dtype=np.float32)
    y = rng.integers(0, classes, 8) if classes else (rng.random(8) < 0.5).astype(np.float32)
    return x, y


def _ctr_example() -> tuple[Array, Array]:
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, v, (8, CTR_BAG)) for v in CTR_VOCAB], axis=1)
    return x.astype(np.int64), (rng.random(8) < 0.3).astype(np.float32)


ZOO: dict[str, ZooEntry] = {
    "logreg": ZooEntry(
        "logreg", LogisticRegression, "classification", _example((64,), 10), "digits", lr=0.1
    ),
    "mlp": ZooEntry("mlp", MLP, "classification", _example((64,), 10), "digits", lr=0.1),
    "cnn": ZooEntry("cnn", CNN, "classification", _example((1, 28, 28), 10), "digits28"),
    "embedding": ZooEntry("embedding", EmbeddingCTR, "binary", _ctr_example(), "ctr", lr=0.1),
}


def resolve(model: str | ZooEntry) -> ZooEntry:
    """A zoo name, a ``"module:factory"`` reference or a ZooEntry -> the ZooEntry."""
    if isinstance(model, ZooEntry):
        return model
    if ":" not in model:
        try:
            return ZOO[model]
        except KeyError:
            raise ExportError(
                f"unknown model {model!r}: use one of {', '.join(ZOO)} or 'module:factory'"
            ) from None
    module_name, _, attr = model.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"cannot import model factory {model!r}: {exc}") from exc
    entry = factory()
    if not isinstance(entry, ZooEntry):
        raise ExportError(f"{model}() must return a ZooEntry, got {type(entry).__name__}")
    return entry
