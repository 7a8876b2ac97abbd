"""The aggregation core: pure numpy, no I/O, no asyncio.

FedBuff buffered async aggregation (:class:`FedBuffAggregator`), synchronous rounds
(:class:`SyncRoundAggregator`), pre-aggregation on API replicas (:class:`PartialBuilder`,
merged by the leader with ``merge``), staleness and example weights, the server
optimizers of Reddi et al. (2021), clipping, central Gaussian noise, update validation
with stable reject codes, and state/restore as plain values. The server, the simulator
and the load tests all aggregate through this package; nothing else reimplements the
math. It imports numpy and scipy's BLAS, nothing of the wire format or of HTTP.

Numerics: parameters, updates and the buffer sum are float32 (the sum's error bound is
in :mod:`.accumulator`); a fold is one ``sdot`` (norm + NaN/Inf check) and one ``saxpy``
pass per tensor, on single-threaded OpenBLAS (see :mod:`.blas`).

Errors: refusals raise :class:`server.errors.UpdateRejected` (``code`` is a
:class:`RejectReason`), bad configs :class:`server.errors.ConfigError`, unusable
states :class:`SnapshotError` (an :class:`server.errors.AsyncflError`). What a code
means to a client is the server's error table's business.
"""

from __future__ import annotations

from server.aggregation.buffer import FedBuffAggregator
from server.aggregation.config import (
    AggregationConfig,
    ExampleWeightingConfig,
    OptimizerConfig,
    StalenessConfig,
)
from server.aggregation.factory import make_aggregator, restore_aggregator
from server.aggregation.masked import MaskedConfig, Release
from server.aggregation.optimizers import ServerOptimizer, make_optimizer
from server.aggregation.partial import Partial, PartialBuilder, PartialGroup
from server.aggregation.privacy import clip_by_norm, secret_seed, sensitivity
from server.aggregation.results import (
    AggregatorStats,
    FoldResult,
    MergeResult,
    RoundState,
    StepResult,
)
from server.aggregation.staleness import make_staleness_fn
from server.aggregation.state import SnapshotError
from server.aggregation.sync import SyncRoundAggregator
from server.aggregation.validation import ModelSpec, RejectReason, validate_update
from server.aggregation.weights import example_weight

__all__ = [
    "AggregationConfig",
    "AggregatorStats",
    "ExampleWeightingConfig",
    "FedBuffAggregator",
    "FoldResult",
    "MaskedConfig",
    "MergeResult",
    "ModelSpec",
    "OptimizerConfig",
    "Partial",
    "PartialBuilder",
    "PartialGroup",
    "RejectReason",
    "Release",
    "RoundState",
    "ServerOptimizer",
    "SnapshotError",
    "StalenessConfig",
    "StepResult",
    "SyncRoundAggregator",
    "clip_by_norm",
    "example_weight",
    "make_aggregator",
    "make_optimizer",
    "make_staleness_fn",
    "restore_aggregator",
    "secret_seed",
    "sensitivity",
    "validate_update",
]
