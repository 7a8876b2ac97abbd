"""Datasets for the model zoo, as numpy arrays with the dtypes the graphs take.

Torch-free: the simulator and the server import this without the ``export`` extra.

- ``digits``: scikit-learn's 1797 8x8 digit images, flattened to 64 float32 features in
  [0, 1], int64 labels 0-9; a fixed stratified 80/20 split (seed 0).
- ``digits28``: the same images and split, bilinearly upsampled to float32 (N, 1, 28, 28)
  for the CNN.
- ``ctr``: synthetic click-through data (seed 0). ``x`` is int64 (N, 4, 3): four sparse
  id fields (user, item, category, context; ids drawn Zipf-like, 0 is padding), each a
  bag of up to three ids; ``y`` is float32 clicks in {0, 1} drawn from a hidden
  logistic model with per-id effects and a user-item affinity.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from server.modeling.errors import DatasetError

Array = np.ndarray[Any, Any]
Split = tuple[Array, Array, Array, Array]

DATASETS: tuple[str, ...] = ("digits", "digits28", "ctr")

CTR_VOCAB: tuple[int, ...] = (1000, 2000, 50, 100)  # ids per field, 0 included (padding)
CTR_BAG = 3
CTR_SIZES = (16_000, 4_000)  # train, test
_SEED = 0


def load_dataset(name: str) -> Split:
    """``(x_train, y_train, x_test, y_test)`` for ``name``; fresh copies on every call."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return tuple(a.copy() for a in _cached(name))  # type: ignore[return-value]


@cache
def _cached(name: str) -> Split:
    if name == "digits":
        return _digits()
    if name == "digits28":
        x_train, y_train, x_test, y_test = _digits()
        return _upsample28(x_train), y_train, _upsample28(x_test), y_test
    return _ctr()


def _digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=_SEED, stratify=y
    )
    return x_train, y_train, x_test, y_test


def _interpolation_matrix(src: int, dst: int) -> Array:
    """(dst, src) bilinear weights, pixel centres aligned (``align_corners=False``)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    matrix = np.zeros((dst, src))
    matrix[np.arange(dst), lo] += 1 - frac
    matrix[np.arange(dst), hi] += frac
    return matrix


def _upsample28(x: Array) -> Array:
    a = _interpolation_matrix(8, 28)
    images = x.reshape(-1, 8, 8).astype(np.float64)
    return (a @ images @ a.T).astype(np.float32)[:, None, :, :]


def _ctr() -> Split:
    rng = np.random.default_rng(_SEED)
    n = sum(CTR_SIZES)
    x = np.zeros((n, len(CTR_VOCAB), CTR_BAG), dtype=np.int64)
    effect = 0.0
    for field, vocab in enumerate(CTR_VOCAB):
        popularity = np.arange(1, vocab, dtype=np.float64) ** -1.1
        ids = rng.choice(np.arange(1, vocab), size=(n, CTR_BAG), p=popularity / popularity.sum())
        # user and item are single ids; category and context are bags of 1-3 ids
        lengths = np.ones(n, np.int64) if field < 2 else rng.integers(1, CTR_BAG + 1, n)
        x[:, field, :] = np.where(np.arange(CTR_BAG) < lengths[:, None], ids, 0)
        weights = np.concatenate([[0.0], rng.normal(0.0, 0.8, vocab - 1)])
        effect = effect + weights[x[:, field, :]].sum(1) / lengths
    users = rng.normal(0.0, 1.0, (CTR_VOCAB[0], 4))
    items = rng.normal(0.0, 1.0, (CTR_VOCAB[1], 4))
    affinity = (users[x[:, 0, 0]] * items[x[:, 1, 0]]).sum(1)
    logit = -1.2 + effect + 0.5 * affinity
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    train = CTR_SIZES[0]
    return x[:train], y[:train], x[train:], y[train:]
