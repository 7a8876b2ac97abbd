"""Plain records the repositories read and write (no ORM objects leak out)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TaskRecord:
    id: str
    created_at: float
    status: str
    mode: str
    config: dict[str, Any]
    model: str
    artifacts: dict[str, str]
    eval_blob: str | None
    current_version: int
    fence: int


@dataclass(frozen=True)
class VersionRecord:
    task_id: str
    version: int
    created_at: float
    params_blob: str | None  # None: never published, not kept (an older version of a commit)
    snapshot_blob: str | None  # None: not kept (an older version of a group commit)
    queue_position: str
    fence: int
    num_updates: int
    mean_staleness: float | None = None
    metrics: dict[str, Any] | None = None

    def as_row(self) -> dict[str, Any]:
        """The record as plain values, a shallow copy (``asdict`` deep-copies the metrics)."""
        return {name: getattr(self, name) for name in _VERSION_FIELDS}


@dataclass(frozen=True)
class LedgerEntry:
    """One update's line in the ledger: accepted, applied (to a version) or rejected."""

    id: str
    task_id: str
    device_id: str
    created_at: float
    status: str
    reason: str | None = None
    base_version: int | None = None
    num_examples: int | None = None
    staleness: int | None = None
    weight: float | None = None
    applied_version: int | None = None
    # cost as reported (see server/fleet/cost.py: cost_fields)
    train_s: float | None = None
    energy_j: float | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None

    def as_row(self) -> dict[str, Any]:
        """The entry as plain values, a shallow copy (``asdict`` deep-copies: slow)."""
        return {name: getattr(self, name) for name in _LEDGER_FIELDS}


_LEDGER_FIELDS = tuple(f.name for f in fields(LedgerEntry))
_VERSION_FIELDS = tuple(f.name for f in fields(VersionRecord))


@dataclass(frozen=True)
class DeviceRecord:
    id: str
    created_at: float
    info: dict[str, Any] = field(default_factory=dict)
    revoked: bool = False


@dataclass(frozen=True)
class EvaluationRecord:
    """One device's federated evaluation of the version its session was for."""

    id: str  # the session id
    task_id: str
    device_id: str
    version: int
    created_at: float
    num_examples: int
    loss: float
    accuracy: float | None = None
