"""Build or restore the aggregator a task's config asks for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import AggregationConfig
from server.aggregation.masked import MaskedConfig
from server.aggregation.state import SnapshotError
from server.aggregation.sync import SyncRoundAggregator

__all__ = ["make_aggregator", "restore_aggregator"]

Aggregator = FedBuffAggregator | SyncRoundAggregator


def make_aggregator(
    params: Sequence[np.ndarray[Any, Any]],
    config: AggregationConfig,
    *,
    version: int = 0,
    masked: MaskedConfig | None = None,
    noise_seed: int | None = None,
) -> Aggregator:
    """A :class:`SyncRoundAggregator` for ``mode = "sync"``, else a FedBuffAggregator;
    ``masked``: they fold masked updates (secure aggregation); ``noise_seed``: seeds the
    noise instead of ``config.seed`` (a secret one for a DP task)."""
    cls = SyncRoundAggregator if config.mode == "sync" else FedBuffAggregator
    return cls(params, config, version=version, masked=masked, noise_seed=noise_seed)


def restore_aggregator(state: dict[str, Any]) -> Aggregator:
    """Restore a :meth:`~AggregatorBase.state` of either kind (SnapshotError if neither)."""
    kinds: dict[str, type[Aggregator]] = {
        FedBuffAggregator.kind: FedBuffAggregator,
        SyncRoundAggregator.kind: SyncRoundAggregator,
    }
    cls = kinds.get(state.get("kind", ""))
    if cls is None:
        raise SnapshotError(f"unknown aggregator kind {state.get('kind')!r}")
    return cls.from_state(state)
