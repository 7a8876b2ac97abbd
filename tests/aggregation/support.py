"""Shared builders for the aggregation tests."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from server.aggregation import AggregationConfig, FedBuffAggregator, SyncRoundAggregator
from server.storage import snapshots

SHAPES: tuple[tuple[int, ...], ...] = ((3, 4), (5,), (2, 2, 2))


def model(seed: int = 0, shapes: tuple[tuple[int, ...], ...] = SHAPES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def updates(
    count: int, seed: int = 1, shapes: tuple[tuple[int, ...], ...] = SHAPES, scale: float = 0.1
) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes] for _ in range(count)
    ]


def config(**kwargs: Any) -> AggregationConfig:
    return AggregationConfig.from_dict(kwargs)


def fedbuff(**kwargs: Any) -> FedBuffAggregator:
    return FedBuffAggregator(model(), config(**kwargs))


def sync(**kwargs: Any) -> SyncRoundAggregator:
    return SyncRoundAggregator(model(), config(mode="sync", **kwargs))


def flat(tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([t.ravel() for t in tensors])


def snapshot(agg: FedBuffAggregator | SyncRoundAggregator) -> bytes:
    """The aggregator's whole state as the bytes the server stores."""
    return snapshots.dump(agg.state())


A = TypeVar("A", FedBuffAggregator, SyncRoundAggregator)


def restore(cls: type[A], data: bytes) -> A:
    return cls.from_state(snapshots.load(data))
