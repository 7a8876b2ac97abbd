"""Splitting a labelled dataset across devices: label skew by Dirichlet(alpha)."""

from __future__ import annotations

from typing import Any

import numpy as np


def dirichlet_partition(
    labels: np.ndarray[Any, Any],
    num_clients: int,
    alpha: float,
    *,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray[Any, Any]]:
    """Indices per client; each class is spread over clients by Dirichlet(alpha) shares.

    Small ``alpha`` (0.1) gives each client few classes (strongly non-IID); large
    ``alpha`` (100) approaches an IID split. Every client gets at least ``min_size``
    examples (taken from the largest shards), so no device is left with nothing.
    """
    if num_clients < 1 or alpha <= 0:
        raise ValueError("num_clients must be >= 1 and alpha > 0")
    if num_clients * min_size > len(labels):
        raise ValueError(
            f"{len(labels)} examples cannot give {num_clients} clients {min_size} each"
        )
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            shards[client].extend(part.tolist())
    for client in range(num_clients):
        while len(shards[client]) < min_size:
            donor = max(range(num_clients), key=lambda c: len(shards[c]))
            shards[client].append(shards[donor].pop())
    return [np.asarray(sorted(s), dtype=np.int64) for s in shards]
