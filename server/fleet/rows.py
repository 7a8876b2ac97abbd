"""What the fleet repository reads: plain rows, already grouped by the database.

Tiers in these rows are as the devices reported them; :mod:`server.fleet.rollup`
normalises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OLDER = -1  # the version of an AppliedGroup summing every version before the kept window


@dataclass(frozen=True)
class AppliedGroup:
    """Applied updates of one version (or :data:`OLDER`) from devices of one tier."""

    version: int
    tier: str | None
    updates: int
    staleness_sum: float = 0.0
    staleness_n: int = 0
    examples: int = 0
    train_s: float = 0.0
    timed: int = 0
    metered_j: float = 0.0
    metered: int = 0
    unmetered_train_s: float = 0.0
    unmetered_timed: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(frozen=True)
class EvalGroup:
    """Federated evaluations of one version by devices of one tier."""

    version: int
    tier: str | None
    devices: int
    examples: float
    loss_sum: float  # sum of loss x examples
    correct_sum: float  # sum of accuracy x examples, over reports with an accuracy
    scored: float  # examples of reports with an accuracy


@dataclass(frozen=True)
class VersionRow:
    version: int
    created_at: float
    num_updates: int
    mean_staleness: float | None
    metrics: dict[str, Any] | None  # the server's held-out evaluation


@dataclass(frozen=True)
class LedgerBucket:
    """Ledger rows that arrived in one time bucket, by status and reason."""

    bucket: int
    status: str
    reason: str | None
    count: int


@dataclass(frozen=True)
class CheckinBucket:
    bucket: int
    result: str
    count: int


@dataclass(frozen=True)
class TierDevices:
    """Devices of one reported tier: enrolled (all tasks), or seen in a task's ledger."""

    tier: str | None
    count: int
