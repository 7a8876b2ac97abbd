"""The durable update queue between the API (which acknowledges) and the aggregator.

An upload is acknowledged only once :meth:`UpdateQueue.append` has returned, i.e. once
the update is durable in the queue. The task's aggregator consumes the queue in order;
a committed version records the queue position it consumed up to, so after a crash or a
failover the next aggregator resumes exactly after it: nothing acknowledged is lost and
nothing is applied twice.

Implementations: :class:`server.coordination.locallog.LocalLogQueue` (embedded: an
append-only file log per task) and the Redis Stream queue (distributed mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# The position before the first update of a task.
START = "0"


@dataclass(frozen=True)
class QueuedUpdate:
    """An accepted update. ``body`` is the upload's msgpack body (it holds the tensors);
    ``tensors`` is its decoded form when the producer is in this process."""

    update_id: str
    task_id: str
    device_id: str
    base_version: int
    num_examples: int
    created_at: float
    body: bytes | bytearray | memoryview
    metrics: dict[str, Any] = field(default_factory=dict)
    position: str = ""
    tensors: list[np.ndarray[Any, Any]] | None = field(default=None, compare=False)
    # The L2 norm the ingest check computed for ``tensors`` (lets the fold skip a pass).
    norm: float | None = field(default=None, compare=False)

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.update_id,
            "task": self.task_id,
            "device": self.device_id,
            "base": self.base_version,
            "n": self.num_examples,
            "at": self.created_at,
            "metrics": self.metrics,
        }

    @classmethod
    def from_meta(
        cls, meta: dict[str, Any], body: bytes | bytearray | memoryview, position: str
    ) -> QueuedUpdate:
        return cls(
            update_id=str(meta["id"]),
            task_id=str(meta["task"]),
            device_id=str(meta["device"]),
            base_version=int(meta["base"]),
            num_examples=int(meta["n"]),
            created_at=float(meta["at"]),
            body=body,
            metrics=dict(meta.get("metrics") or {}),
            position=position,
        )


class UpdateQueue(Protocol):
    async def append(self, update: QueuedUpdate) -> str:
        """Make ``update`` durable and return its position."""
        ...

    def consume(self, task_id: str, after: str) -> AsyncIterator[QueuedUpdate]:
        """Every update after ``after`` in order: the durable backlog, then live ones."""
        ...

    async def trim(self, task_id: str, upto: str) -> None:
        """Allow the queue to drop updates up to and including ``upto`` (committed)."""
        ...

    async def last_position(self, task_id: str) -> str:
        """The position of the newest durable update (:data:`START` if none)."""
        ...

    def position_key(self, position: str) -> tuple[int, ...]:
        """A sort key: positions compare in queue order."""
        ...

    async def appended_count(self, task_id: str) -> int:
        """How many updates were ever appended (acknowledged) for the task."""
        ...

    async def close(self) -> None: ...
