"""What every API replica knows about a task: its config, artifacts, published version
and the counters its status reports. The aggregator updates it; handlers only read."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from client_sdk.bundle import Manifest
from server.aggregation import ModelSpec
from server.storage.records import TaskRecord
from server.tasks.config import TaskConfig

FEDERATED_VERSIONS_KEPT = 20
FEDERATED_SESSIONS_KEPT = 100_000


@dataclass
class PublishedVersion:
    """The newest committed version: what check-in hands out and clients download."""

    version: int
    params_blob: str
    params: bytes  # msgpack list of wire tensors, served as is
    committed_at: float


@dataclass
class TaskState:
    record: TaskRecord
    config: TaskConfig
    manifest: Manifest
    spec: ModelSpec
    published: PublishedVersion
    paused: bool = False
    rejected: Counter[str] = field(default_factory=Counter)
    applied: int = 0
    dropped: int = 0
    last_eval: dict[str, Any] | None = None
    session_seconds_ewma: float = 0.0
    # federated evaluation: version -> example-weighted sums; sessions already counted
    federated: dict[int, dict[str, float]] = field(default_factory=dict)
    federated_sessions: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def version(self) -> int:
        return self.published.version

    def publish(self, published: PublishedVersion) -> None:
        if published.version > self.published.version:  # versions never go back
            self.published = published

    def observe_session(self, issued_at: float, now: float | None = None) -> None:
        took = max(0.0, (now or time.time()) - issued_at)
        alpha = 0.05
        self.session_seconds_ewma = (
            took
            if self.session_seconds_ewma == 0
            else (1 - alpha) * self.session_seconds_ewma + alpha * took
        )

    def record_federated_eval(self, sid: str, version: int, metrics: dict[str, float]) -> bool:
        """Add one device's evaluation of ``version``; False if this session reported."""
        if sid in self.federated_sessions:
            return False
        if len(self.federated_sessions) > FEDERATED_SESSIONS_KEPT:
            self.federated_sessions.clear()  # old sessions have expired long ago
        self.federated_sessions.add(sid)
        n = metrics["num_examples"]
        sums = self.federated.setdefault(
            version, {"devices": 0.0, "examples": 0.0, "loss": 0.0, "correct": 0.0, "scored": 0.0}
        )
        sums["devices"] += 1
        sums["examples"] += n
        sums["loss"] += metrics["loss"] * n
        if "accuracy" in metrics:
            sums["correct"] += metrics["accuracy"] * n
            sums["scored"] += n
        while len(self.federated) > FEDERATED_VERSIONS_KEPT:
            del self.federated[min(self.federated)]
        return True

    def federated_eval(self) -> dict[str, Any] | None:
        """The newest version's federated evaluation, example-weighted."""
        if not self.federated:
            return None
        version = max(self.federated)
        sums = self.federated[version]
        return {
            "version": version,
            "devices": int(sums["devices"]),
            "examples": int(sums["examples"]),
            "loss": sums["loss"] / sums["examples"],
            "accuracy": sums["correct"] / sums["scored"] if sums["scored"] else None,
        }

    def retry_after(self, jitter: float) -> float:
        """How long a device turned away should wait: about half a typical session."""
        base = min(60.0, max(1.0, self.session_seconds_ewma / 2))
        return round(base * (0.5 + jitter), 3)
