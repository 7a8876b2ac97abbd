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

    def retry_after(self, jitter: float) -> float:
        """How long a device turned away should wait: about half a typical session."""
        base = min(60.0, max(1.0, self.session_seconds_ewma / 2))
        return round(base * (0.5 + jitter), 3)
